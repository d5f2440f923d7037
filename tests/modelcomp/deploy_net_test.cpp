// Deployment nets (deploy_net.h): batch-norm folding; the fused f32 net and the oneDNN int8 conv / inner product
// against the layer-by-layer fp32 model; int8 records.
#include <doctest/doctest.h>

#include <omp.h>
#include <zlib.h>

#include <cmath>
#include <cstring>
#include <random>

#include "modelcomp/deploy_net.h"
#include "io/config.h"
#include "random_model.h"
#include "train/approx_attach.h"
#include "nn/model_io.h"
#include "util/check.h"

using namespace frugal;
using namespace frugal::modelcomp;
using json = nlohmann::json;
using testing::fill;
using testing::randomize;

namespace {
json small_resnet() {
  json conv8 = {{"type", "conv"}, {"out", 8}, {"k", 3}, {"bias", false}};
  json conv16s2 = {{"type", "conv"}, {"out", 16}, {"k", 3}, {"s", 2}, {"bias", false}};
  json conv16 = {{"type", "conv"}, {"out", 16}, {"k", 3}, {"bias", false}};
  json bn = {{"type", "bn"}}, relu = {{"type", "relu"}};
  json layers = json::array(
      {conv8, bn, relu,
       {{"type", "residual"}, {"main", {conv8, bn, relu, conv8, bn}}, {"shortcut", json::array()}},
       {{"type", "residual"},
        {"main", {conv16s2, bn, relu, conv16, bn}},
        {"shortcut", {{{"type", "shortcut_a"}, {"out", 16}, {"s", 2}}}}},
       {{"type", "maxpool"}, {"k", 2}},
       {{"type", "gap"}},
       {{"type", "flatten"}},
       {{"type", "linear"}, {"out", "classes"}}});
  return {{"input", {3, 12, 12}}, {"classes", 5}, {"layers", layers}};
}

Tensor logits(nn::Model& m, const Tensor& x) {
  Tensor out;
  out.copy_from(m.forward(x, nn::ForwardContext{}));
  return out;
}

float max_abs(const Tensor& t) {
  float a = 0;
  for (int64_t i = 0; i < t.size(); ++i) a = std::max(a, std::fabs(t.data()[i]));
  return a;
}

/// The fp32 model with the int8 records' dequantized weights (what a packed int8 file decodes to).
std::unique_ptr<nn::Model> dequantized(nn::Model& folded, const std::vector<PackedTensor>& recs) {
  auto m = std::make_unique<nn::Model>(folded.spec(), 0);
  io::TensorFile f;
  nn::add_model_tensors(folded, f);
  nn::load_model_tensors(*m, f, "mem");
  for (nn::Param* p : m->params())
    for (const PackedTensor& r : recs)
      if (r.name == p->name) {
        const size_t per = r.int8.codes.size() / r.int8.scales.size();
        for (size_t i = 0; i < r.int8.codes.size(); ++i)
          p->value.data()[i] = float(r.int8.codes[i]) * r.int8.scales[i / per];
        ++p->version;
      }
  return m;
}

std::vector<std::pair<std::string, Int8Weights>> as_records(const std::vector<PackedTensor>& recs) {
  std::vector<std::pair<std::string, Int8Weights>> out;
  for (const PackedTensor& r : recs) out.emplace_back(r.name, r.int8);
  return out;
}
}  // namespace

TEST_CASE("int8: batch norm folded into its conv computes the same function") {
  nn::Model m(small_resnet(), 1);
  randomize(m, 2);
  auto folded = fold_batchnorm(m);
  for (const auto& l : folded->spec()["layers"]) CHECK(l["type"] != "bn");
  CHECK(folded->params().size() < m.params().size());
  std::mt19937_64 rng(3);
  Tensor x({4, 3, 12, 12});
  fill(x, rng, -1.f, 1.f);
  const Tensor a = logits(m, x), b = logits(*folded, x);
  float diff = 0;
  for (int64_t i = 0; i < a.size(); ++i) diff = std::max(diff, std::fabs(a.data()[i] - b.data()[i]));
  CHECK(diff < 1e-4f * std::max(1.f, max_abs(a)));
}

TEST_CASE("int8: oneDNN int8 conv + inner product equal the fp32 layers of the dequantized weights within rounding") {
  // conv + ReLU (u8 output, rounded once) then a linear (f32 logits). Inputs lie on the s8 grid (the calibration
  // batch is the test batch, so the largest input maps to code 127 exactly): the conv's accumulation is exact and
  // the only error is the rounding of its output to u8, at most half a code per element. A square 3 x 3 conv, and
  // a 3 x 1 one (the vertical factor of a low-rank split; same output size).
  for (const json& conv : {json{{"type", "conv"}, {"out", 4}, {"k", 3}},
                           json{{"type", "conv"}, {"out", 4}, {"kh", 3}, {"kw", 1}, {"ph", 1}, {"pw", 0}}}) {
  INFO(conv.dump());
  json spec = {{"input", {2, 5, 5}},
               {"classes", 3},
               {"layers",
                {conv,
                 {{"type", "relu"}},
                 {{"type", "flatten"}},
                 {{"type", "linear"}, {"out", "classes"}}}}};
  nn::Model m(spec, 1);
  randomize(m, 5);
  std::mt19937_64 rng(6);
  Tensor x({8, 2, 5, 5});
  std::uniform_int_distribution<int> code(-127, 127);
  const float s_in = 0.01f;
  for (int64_t i = 0; i < x.size(); ++i) x.data()[i] = float(code(rng)) * s_in;
  x.data()[0] = 127 * s_in;
  auto folded = fold_batchnorm(m);
  const std::vector<PackedTensor> recs = quantize_int8(*folded, {x});
  REQUIRE(recs.size() == 2);
  CHECK(recs[0].int8.src_scale == doctest::Approx(s_in).epsilon(1e-6));
  CHECK(!recs[0].int8.src_unsigned);
  CHECK(recs[0].int8.dst_unsigned);
  CHECK(recs[1].int8.dst_scale == 0.f);
  auto ref = dequantized(*folded, recs);
  const Tensor want = logits(*ref, x);
  DeployNet net(*ref, as_records(recs), "mem");
  Tensor got;
  net.forward(x, got, nn::ForwardContext{});
  REQUIRE(got.dims() == want.dims());
  // |error of logit o| <= sum_j |W[o, j]| * s_mid / 2 (+ float rounding)
  const float s_mid = recs[1].int8.src_scale;
  const Tensor& w = ref->params()[2]->value;  // linear weight (3, 100), dequantized
  const int64_t in = w.dim(1);
  for (int64_t n = 0; n < got.dim(0); ++n)
    for (int64_t o = 0; o < 3; ++o) {
      float bound = 0;
      for (int64_t j = 0; j < in; ++j) bound += std::fabs(w.data()[o * in + j]);
      bound = bound * s_mid / 2 + 1e-4f;
      REQUIRE(std::fabs(got.data()[n * 3 + o] - want.data()[n * 3 + o]) <= bound);
    }
  bool any_int8 = false;
  for (const std::string& impl : net.implementations()) any_int8 |= impl.find("int8") != std::string::npos;
  CHECK(any_int8);
  }
}

TEST_CASE("int8: a residual net on oneDNN int8 follows its fp32 model") {
  nn::Model m(small_resnet(), 1);
  randomize(m, 7);
  auto folded = fold_batchnorm(m);
  std::mt19937_64 rng(8);
  Tensor calib({32, 3, 12, 12}), x({16, 3, 12, 12});
  fill(calib, rng, -1.f, 1.f);
  fill(x, rng, -1.f, 1.f);
  const std::vector<PackedTensor> recs = quantize_int8(*folded, {calib});
  CHECK(recs.size() == 6);  // 5 convs + the linear
  auto ref = dequantized(*folded, recs);
  const Tensor want = logits(m, x);
  ref->set_inference_net(std::make_shared<DeployNet>(*ref, as_records(recs), "mem"));
  const Tensor got = logits(*ref, x);
  double err = 0, norm = 0;
  for (int64_t i = 0; i < got.size(); ++i) {
    err += std::pow(got.data()[i] - want.data()[i], 2);
    norm += std::pow(want.data()[i], 2);
  }
  CHECK(std::sqrt(err / norm) < 0.05);  // 8-bit activations through 6 layers: a few per cent
  CHECK_THROWS_WITH_AS(ref->forward(x, nn::ForwardContext{true, 0}), doctest::Contains("deployed for inference"),
                       frugal::Error);
}

TEST_CASE("int8: records round-trip, corrupt ones are refused with the file and byte offset") {
  PackedModel pm;
  pm.meta = {{"kind", "packed-model"}};
  PackedTensor t;
  t.name = "0.weight";
  t.dims = {2, 3};
  t.encoding = Encoding::int8;
  t.int8.codes = {1, -2, 127, -127, 0, 5};
  t.int8.scales = {0.5f, 0.25f};
  t.int8.src_scale = 0.1f;
  t.int8.dst_scale = 0.2f;
  t.int8.dst_unsigned = true;
  pm.tensors = {t};
  const std::string good = encode_packed(pm).file;
  UnpackedModel u = decode_packed(good, "m.pk");
  REQUIRE(u.int8.size() == 1);
  CHECK(u.int8[0].second.codes == t.int8.codes);
  CHECK(u.int8[0].second.scales == t.int8.scales);
  CHECK(u.int8[0].second.dst_unsigned);
  CHECK(u.int8[0].second.src_scale == 0.1f);
  CHECK(u.tensors[0].second.data()[2] == 127 * 0.5f);
  CHECK(u.tensors[0].second.data()[3] == -127 * 0.25f);
  // record: varint name len, "0.weight", rank, 2 dims, u8 encoding, u8 flags, f32 src, f32 dst, varint C, ...
  const size_t rec = good.size() - 4 - (1 + 8 + 1 + 2 + 1 + 1 + 4 + 4 + 1 + 8 + 6);
  const size_t flags_at = rec + 1 + 8 + 1 + 2 + 1;
  REQUIRE(uint8_t(good[flags_at]) == 2);
  auto corrupt = [&](size_t at, const void* bytes, size_t n) {
    std::string b = good;
    std::memcpy(b.data() + at, bytes, n);
    const uint32_t crc = uint32_t(crc32(0L, reinterpret_cast<const Bytef*>(b.data()), uInt(b.size() - 4)));
    std::memcpy(b.data() + b.size() - 4, &crc, 4);
    return b;
  };
  const float nan = std::nanf(""), neg = -1.f;
  const uint8_t bad_flags = 6, bad_c = 3;
  const int8_t minus128 = -128;
  CHECK_THROWS_WITH_AS(decode_packed(corrupt(flags_at, &bad_flags, 1), "m.pk"),
                       doctest::Contains("activation flags 6"), frugal::Error);
  CHECK_THROWS_WITH_AS(decode_packed(corrupt(flags_at + 1, &nan, 4), "m.pk"), doctest::Contains("input scale"),
                       frugal::Error);
  CHECK_THROWS_WITH_AS(decode_packed(corrupt(flags_at + 5, &neg, 4), "m.pk"), doctest::Contains("output scale"),
                       frugal::Error);
  CHECK_THROWS_WITH_AS(decode_packed(corrupt(flags_at + 9, &bad_c, 1), "m.pk"),
                       doctest::Contains("3 weight scales for 2"), frugal::Error);
  CHECK_THROWS_WITH_AS(decode_packed(corrupt(flags_at + 10, &nan, 4), "m.pk"), doctest::Contains("weight scale"),
                       frugal::Error);
  CHECK_THROWS_WITH_AS(decode_packed(corrupt(flags_at + 18, &minus128, 1), "m.pk"), doctest::Contains("-128"),
                       frugal::Error);
  CHECK_THROWS_WITH_AS(decode_packed(corrupt(flags_at + 10, &neg, 4), "m.pk"), doctest::Contains("'m.pk'"),
                       frugal::Error);
  const std::string at_offset = "offset " + std::to_string(flags_at + 5);
  CHECK_THROWS_WITH_AS(decode_packed(corrupt(flags_at + 1, &nan, 4), "m.pk"), doctest::Contains(at_offset.c_str()),
                       frugal::Error);
  // an unchecked byte flip: the checksum
  std::string flip = good;
  flip[flags_at + 12] ^= 0x40;
  CHECK_THROWS_WITH_AS(decode_packed(flip, "m.pk"), doctest::Contains("checksum"), frugal::Error);
}

TEST_CASE("int8: records inconsistent with the model are refused, naming the tensor and its record's offset") {
  nn::Model m(small_resnet(), 1);
  randomize(m, 9);
  auto folded = fold_batchnorm(m);
  std::mt19937_64 rng(10);
  Tensor calib({8, 3, 12, 12});
  fill(calib, rng, -1.f, 1.f);
  std::vector<PackedTensor> recs = quantize_int8(*folded, {calib});
  auto records = as_records(recs);
  records[1].second.src_scale *= 2;  // the second conv reads the first's output at another scale
  records[1].second.offset = 1234;
  CHECK_THROWS_WITH_AS(DeployNet(*folded, records, "x.packed"), doctest::Contains("record at byte offset 1234"),
                       frugal::Error);
  records = as_records(recs);
  records[0].second.dst_unsigned = false;
  CHECK_THROWS_WITH_AS(DeployNet(*folded, records, "x.packed"), doctest::Contains("x.packed"), frugal::Error);
  records = as_records(recs);
  records.pop_back();
  CHECK_THROWS_WITH_AS(DeployNet(*folded, records, "x.packed"), doctest::Contains("no int8 record"), frugal::Error);
}

TEST_CASE("fused f32: the fused oneDNN graph computes the layer-by-layer model's logits") {
  // every preset the net supports, a residual net with both shortcut kinds, two batch sizes (two plans)
  struct Case {
    std::string what;
    json spec;
  };
  std::vector<Case> cases{{"small_resnet", small_resnet()}};
  for (const char* preset : {"lenet5", "cnn", "resnet20", "mlp"}) {
    const Dims chw = std::string(preset) == "resnet20" ? Dims{3, 32, 32} : Dims{1, 28, 28};
    cases.push_back({preset, nn::preset_spec(preset, 0.5, -1, chw, 10)});
  }
  // every way of picking the conv implementations: oneDNN's first choice, with column pairs, the fastest by timing
  for (const Case& c : cases)
    for (ConvChoice choice : {ConvChoice::first, ConvChoice::pairs, ConvChoice::fastest}) {
      CAPTURE(c.what);
      CAPTURE(int(choice));
      nn::Model m(c.spec, 1);
      randomize(m, 7);
      nn::Model fused(c.spec, 1);
      io::TensorFile f;
      nn::add_model_tensors(m, f);
      nn::load_model_tensors(fused, f, "mem");
      REQUIRE(install_fused_f32(fused) == "");
      dynamic_cast<DeployNet&>(*fused.inference_net()).set_conv_choice(choice);
      CHECK(inference_path(fused) == "fused-f32");
      CHECK(inference_path(m) == "layers");
      const Dims& chw = m.input_chw();
      for (int64_t batch : {5, 1}) {
        CAPTURE(batch);
        std::mt19937_64 rng(8 + batch);
        Tensor x({batch, chw[0], chw[1], chw[2]});
        fill(x, rng, -1.f, 1.f);
        const Tensor a = logits(m, x), b = logits(fused, x);
        REQUIRE(a.dims() == b.dims());
        float diff = 0;
        for (int64_t i = 0; i < a.size(); ++i) diff = std::max(diff, std::fabs(a.data()[i] - b.data()[i]));
        CHECK(max_abs(a) > 0.f);
        CHECK(diff <= 1e-4f * std::max(1.f, max_abs(a)));
      }
      auto* net = dynamic_cast<DeployNet*>(fused.inference_net());
      REQUIRE(net);
      CHECK(net->precision() == DeployNet::Precision::f32);
      CHECK(net->conv_choice() == choice);
      CHECK(!net->implementations().empty());
      bool paired = false;
      for (const std::string& impl : net->implementations()) {
        CHECK(impl.rfind("ref", 0) != 0);
        paired = paired || impl.find("(column pairs)") != std::string::npos;
      }
      // small_resnet's 8-channel stride-1 convs before a ReLU take the column-pair form; with first, none does
      if (c.what == "small_resnet" && choice != ConvChoice::fastest) CHECK(paired == (choice == ConvChoice::pairs));
    }
}

namespace {
/// A copy of `m` (spec and tensors) running its fused f32 net with conv choice `choice` and row bands `bands`.
std::unique_ptr<nn::Model> fused_copy(nn::Model& m, ConvChoice choice, RowBands bands) {
  auto c = std::make_unique<nn::Model>(m.spec(), 1);
  io::TensorFile f;
  nn::add_model_tensors(m, f);
  nn::load_model_tensors(*c, f, "mem");
  REQUIRE(install_fused_f32(*c) == "");
  auto& net = dynamic_cast<DeployNet&>(*c->inference_net());
  net.set_conv_choice(choice);
  net.set_row_bands(bands);
  return c;
}

bool any_contains(const std::vector<std::string>& v, const std::string& s) {
  for (const std::string& e : v)
    if (e.find(s) != std::string::npos) return true;
  return false;
}
}  // namespace

TEST_CASE("row bands: the batch-1 team plan computes the plain fused net's logits") {
  // small_resnet: identity and option-A shortcuts (the fill runs split over the team), a stride-2 conv, 8-channel
  // convs (column pairs under pairs / fastest), 12 and 6 output rows (odd-sized bands: 3 and 3); resnet20 at 32x32
  for (const char* what : {"small_resnet", "resnet20"}) {
    const json spec = std::string(what) == "small_resnet" ? small_resnet()
                                                          : nn::preset_spec("resnet20", 0.5, -1, {3, 32, 32}, 10);
    nn::Model m(spec, 1);
    randomize(m, 11);
    const Dims& chw = m.input_chw();
    std::mt19937_64 rng(12);
    Tensor x({1, chw[0], chw[1], chw[2]});
    fill(x, rng, -1.f, 1.f);
    for (ConvChoice choice : {ConvChoice::first, ConvChoice::pairs, ConvChoice::fastest}) {
      CAPTURE(what);
      CAPTURE(int(choice));
      auto plain = fused_copy(m, choice, RowBands::off);
      auto banded = fused_copy(m, choice, RowBands::on);
      const Tensor a = logits(*plain, x), b = logits(*banded, x);
      REQUIRE(a.dims() == b.dims());
      float diff = 0;
      for (int64_t i = 0; i < a.size(); ++i) diff = std::max(diff, std::fabs(a.data()[i] - b.data()[i]));
      CHECK(max_abs(a) > 0.f);
      CHECK(diff <= 1e-5f * std::max(1.f, max_abs(a)));
      auto& pn = dynamic_cast<DeployNet&>(*plain->inference_net());
      auto& bn = dynamic_cast<DeployNet&>(*banded->inference_net());
      CHECK(!pn.row_bands_used(1));
      CHECK(bn.row_bands_used(1));
      CHECK(!any_contains(pn.implementations(1), "row bands"));
      CHECK(any_contains(bn.implementations(1), "(2 row bands)"));
      const Tensor again = logits(*banded, x);  // a second run of the same plan: nothing left over from the first
      CHECK(std::memcmp(again.data(), b.data(), sizeof(float) * size_t(b.size())) == 0);
      // larger batches keep the plain plan
      Tensor x2({2, chw[0], chw[1], chw[2]});
      fill(x2, rng, -1.f, 1.f);
      logits(*banded, x2);
      CHECK(!bn.row_bands_used(2));
    }
  }
}

namespace {
/// A 4x4 input down to 1x1 through option-A blocks: convs with fewer output rows than bands (run whole inside the
/// team) and an option-A fill before such a conv (flushed as its own step).
json tiny_resnet() {
  json conv8 = {{"type", "conv"}, {"out", 8}, {"k", 3}, {"bias", false}};
  json conv16s2 = {{"type", "conv"}, {"out", 16}, {"k", 3}, {"s", 2}, {"bias", false}};
  json conv16 = {{"type", "conv"}, {"out", 16}, {"k", 3}, {"bias", false}};
  json conv32s2 = {{"type", "conv"}, {"out", 32}, {"k", 3}, {"s", 2}, {"bias", false}};
  json conv32 = {{"type", "conv"}, {"out", 32}, {"k", 3}, {"bias", false}};
  json bn = {{"type", "bn"}}, relu = {{"type", "relu"}};
  json layers = json::array(
      {conv8, bn, relu,
       {{"type", "residual"},
        {"main", {conv16s2, bn, relu, conv16, bn}},
        {"shortcut", {{{"type", "shortcut_a"}, {"out", 16}, {"s", 2}}}}},
       {{"type", "residual"},
        {"main", {conv32s2, bn, relu, conv32, bn}},
        {"shortcut", {{{"type", "shortcut_a"}, {"out", 32}, {"s", 2}}}}},
       {{"type", "gap"}},
       {{"type", "flatten"}},
       {{"type", "linear"}, {"out", "classes"}}});
  return {{"input", {3, 4, 4}}, {"classes", 3}, {"layers", layers}};
}
}  // namespace

TEST_CASE("row bands: timed choice, one-row convs, a forced implementation, repeated runs") {
  for (const char* what : {"small_resnet", "tiny_resnet"}) {
    CAPTURE(what);
    const json spec = std::string(what) == "small_resnet" ? small_resnet() : tiny_resnet();
    nn::Model m(spec, 1);
    randomize(m, 13);
    const Dims& chw = m.input_chw();
    std::mt19937_64 rng(14);
    Tensor x({1, chw[0], chw[1], chw[2]});
    fill(x, rng, -1.f, 1.f);
    auto plain = fused_copy(m, ConvChoice::first, RowBands::off);
    const Tensor want = logits(*plain, x);
    auto close = [&](const Tensor& got) {
      REQUIRE(got.dims() == want.dims());
      float diff = 0;
      for (int64_t i = 0; i < got.size(); ++i) diff = std::max(diff, std::fabs(got.data()[i] - want.data()[i]));
      return diff <= 1e-5f * std::max(1.f, max_abs(want));
    };
    // the default, timed against the plain plan under fastest: either plan, the same logits
    auto timed = fused_copy(m, ConvChoice::fastest, RowBands::timed);
    CHECK(close(logits(*timed, x)));
    // oneDNN's gemm convolution keeps a per-thread scratchpad unless given one: each band has its own
    modelcomp::detail::force_band_impl("gemm");
    auto gemm = fused_copy(m, ConvChoice::first, RowBands::on);
    const Tensor first = logits(*gemm, x);
    modelcomp::detail::force_band_impl("");
    CHECK(any_contains(dynamic_cast<DeployNet&>(*gemm->inference_net()).implementations(1), "gemm"));
    CHECK(close(first));
    bool same = true;
    for (int r = 0; r < 200; ++r) {  // the team's barriers: every run the same bytes
      const Tensor again = logits(*gemm, x);
      same = same && std::memcmp(again.data(), first.data(), sizeof(float) * size_t(first.size())) == 0;
    }
    CHECK(same);
  }
}

TEST_CASE("row bands: int8 nets, and a team OpenMP cuts to one thread") {
  int inner = 0;  // the premise of the nested case below: a region inside a region gets one thread
#pragma omp parallel num_threads(2)
  if (omp_get_thread_num() == 0) {
#pragma omp parallel num_threads(2)
    if (omp_get_thread_num() == 0) inner = omp_get_num_threads();
  }
  REQUIRE(inner == 1);
  nn::Model m(small_resnet(), 1);
  randomize(m, 7);
  auto folded = fold_batchnorm(m);
  std::mt19937_64 rng(9);
  Tensor calib({32, 3, 12, 12}), x({1, 3, 12, 12});
  fill(calib, rng, -1.f, 1.f);
  fill(x, rng, -1.f, 1.f);
  const std::vector<PackedTensor> recs = quantize_int8(*folded, {calib});
  auto run = [&](RowBands bands, bool nested) {
    auto ref = dequantized(*folded, recs);
    auto net = std::make_shared<DeployNet>(*ref, as_records(recs), "mem");
    net->set_row_bands(bands);
    ref->set_inference_net(net);
    Tensor out = logits(*ref, x);  // builds the plan (outside any parallel region: the same primitives)
    if (nested) {  // inside a parallel region OpenMP gives the team one thread: it runs both bands of every step
#pragma omp parallel num_threads(2)
      if (omp_get_thread_num() == 0) out = logits(*ref, x);
    }
    CHECK(net->row_bands_used(1) == (bands == RowBands::on));
    return out;
  };
  const Tensor a = run(RowBands::off, false), b = run(RowBands::on, false), c = run(RowBands::on, true);
  REQUIRE(a.size() == b.size());
  REQUIRE(a.size() == c.size());
  CHECK(max_abs(a) > 0.f);
  // integer sums: each band's outputs are the whole conv's, code for code
  CHECK(std::memcmp(a.data(), b.data(), sizeof(float) * size_t(a.size())) == 0);
  CHECK(std::memcmp(a.data(), c.data(), sizeof(float) * size_t(a.size())) == 0);
}

TEST_CASE("parse_conv_choice: first, pairs, fastest, and an error naming the option otherwise") {
  CHECK(parse_conv_choice("first", "--conv-impl") == ConvChoice::first);
  CHECK(parse_conv_choice("fastest", "--conv-impl") == ConvChoice::fastest);
  CHECK(parse_conv_choice("pairs", "--conv-impl") == ConvChoice::pairs);
  try {
    parse_conv_choice("quickest", "--conv-impl");
    FAIL("accepted 'quickest'");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("--conv-impl") != std::string::npos);
    CHECK(std::string(e.what()).find("quickest") != std::string::npos);
  }
}

TEST_CASE("fused f32: not installed where it would change the arithmetic or cannot run the model") {
  nn::Model m(nn::preset_spec("lenet5", 0.5, -1, {1, 28, 28}, 10), 3);
  io::Config c;
  c.set("multiplier=drum:4");
  c.set("approx_mode=functional");
  train::attach_approx(m, c);
  CHECK(install_fused_f32(m).find("approximate") != std::string::npos);
  CHECK(m.inference_net() == nullptr);

  json spec = {{"input", {1, 6, 6}},
               {"classes", 3},
               {"layers", {{{"type", "flatten"}}, {{"type", "relu"}}, {{"type", "linear"}, {"out", "classes"}}}}};
  nn::Model bare(spec, 1);
  CHECK(install_fused_f32(bare).find("ReLU on signed activations") != std::string::npos);
  CHECK(bare.inference_net() == nullptr);
}
