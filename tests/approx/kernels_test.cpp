#include "approx/kernels.h"
#include "approx/onednn_terms.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <oneapi/dnnl/dnnl.hpp>
#include <functional>
#include <random>

#include "util/check.h"
#include "util/cpu_features.h"

using namespace frugal::approx;
using frugal::util::Isa;

namespace {
// The kernel paths this CPU has (a path it lacks is named in a MESSAGE and skipped).
std::vector<Isa> kernel_isas() {
  std::vector<Isa> out;
  for (Isa i : {Isa::avx512, Isa::avx2, Isa::scalar}) {
    if (frugal::util::isa_available(i))
      out.push_back(i);
    else
      MESSAGE("kernel path ", std::string(frugal::util::isa_name(i)), " skipped: this CPU lacks it");
  }
  return out;
}
// oneDNN runs AVX2-VNNI (ONEDNN_MAX_CPU_ISA=AVX2_VNNI on a CPU with it): the AVX2 kernel path then takes the VNNI
// layout, as on Intel client CPUs with AVX-VNNI and no AVX-512.
bool onednn_avx2_vnni() { return dnnl::get_effective_cpu_isa() == dnnl::cpu_isa::avx2_vnni; }
bool onednn_plain_avx2() { return dnnl::get_effective_cpu_isa() == dnnl::cpu_isa::avx2; }
// Sets the kernel path for a scope (layers built inside take it from construction on).
struct IsaScope {
  Isa before;
  explicit IsaScope(Isa i) : before(frugal::util::set_kernel_isa(i)) {}
  ~IsaScope() { frugal::util::set_kernel_isa(before); }
};
}  // namespace

namespace {
struct Shape {
  int n, h, w, ic, oc, kh, kw, stride, pad, groups;
};
const Shape kShapes[] = {
    {2, 9, 11, 5, 7, 3, 3, 1, 1, 1},     // odd channels, OW not a multiple of 8
    {1, 10, 10, 8, 20, 3, 3, 2, 1, 1},   // stride 2, 2 oc blocks (20 = 16 + 4)
    {2, 8, 8, 6, 4, 3, 3, 1, 0, 2},      // groups, no padding
    {1, 7, 6, 4, 4, 1, 1, 1, 0, 4},      // depthwise 1x1
    {1, 12, 13, 3, 18, 5, 3, 2, 2, 1},   // non-square kernel, big padding
    {3, 16, 16, 16, 16, 3, 3, 1, 1, 1},  // resnet-like
    {1, 6, 7, 40, 8, 3, 3, 1, 1, 1},     // K = 360 > 256: LUT byte sums flushed mid-row
    {1, 4, 9, 32, 8, 3, 3, 1, 1, 1},     // 32 channels: two pixels per 64-byte source fill, one left over
    {1, 5, 6, 8, 8, 3, 3, 1, 1, 2},      // groups of 4 output channels (the AVX2 lut's 4-channel tables)
};

void random_codes(std::mt19937& rng, std::vector<uint8_t>& v) {
  std::uniform_int_distribution<int> d(0, 255);
  for (auto& x : v) x = uint8_t(d(rng));
}

// sum_t A_t(a) B_t(w) over each conv window (one group; a padded position reads pad_code): the direct loop the
// oneDNN term conv and frugal's own engines are checked against. Output (N, OH, OW, OC).
std::vector<int32_t> terms_conv_reference(const std::vector<std::array<double, 256>>& A,
                                          const std::vector<std::array<double, 256>>& B, const Shape& s,
                                          const std::vector<uint8_t>& src, const std::vector<uint8_t>& wcodes,
                                          uint8_t pad_code) {
  const int OH = (s.h + 2 * s.pad - s.kh) / s.stride + 1, OW = (s.w + 2 * s.pad - s.kw) / s.stride + 1;
  std::vector<int32_t> ref(size_t(s.n) * OH * OW * s.oc);
  for (int b = 0; b < s.n; ++b)
    for (int y = 0; y < OH; ++y)
      for (int x = 0; x < OW; ++x)
        for (int o = 0; o < s.oc; ++o) {
          int64_t sum = 0;
          for (int ky = 0; ky < s.kh; ++ky)
            for (int kx = 0; kx < s.kw; ++kx)
              for (int c = 0; c < s.ic; ++c) {
                const int yy = y * s.stride + ky - s.pad, xx = x * s.stride + kx - s.pad;
                const bool in = yy >= 0 && yy < s.h && xx >= 0 && xx < s.w;
                const uint8_t a = in ? src[((size_t(b) * s.h + yy) * s.w + xx) * s.ic + c] : pad_code;
                const uint8_t wc = wcodes[((size_t(o) * s.ic + c) * s.kh + ky) * s.kw + kx];
                for (size_t t = 0; t < A.size(); ++t) sum += int64_t(A[t][a]) * int64_t(B[t][wc]);
              }
          ref[((size_t(b) * OH + y) * OW + x) * s.oc + o] = int32_t(sum);
        }
  return ref;
}

// Random weight codes, with skip (>= 0: a code the quantizer never produces) replaced by 0x7F.
std::vector<uint8_t> random_weight_codes(std::mt19937& rng, size_t n, int skip) {
  std::vector<uint8_t> w(n);
  random_codes(rng, w);
  if (skip >= 0)
    for (auto& c : w) c = c == uint8_t(skip) ? uint8_t(0x7F) : c;
  return w;
}

std::string lut_file() {
  auto path = (std::filesystem::temp_directory_path() / "frugal_kernels_mitchell.bin").string();
  write_lut_file(path, build_table(*make_multiplier("mitchell")), false);
  return path;
}
}  // namespace

TEST_CASE("LUT and functional kernels are bit-exact against the naive mul() loop") {
  std::mt19937 rng(11);
  const std::string lut = "lut:" + lut_file();
  const char* specs[] = {"exact",  "trunc:2",      "bam:0,6",         "bam:2,5",       "mitchell",      "drum:4",
                         "drum:6", "exact:signed", "mitchell:signed", "drum:4:signed", "bam:1,4:signed"};
  for (Isa isa : kernel_isas())
  for (int variant : {0, 1}) {  // the oneDNN engine's VBMI / AVX2 source fill, and the AVX2 LUT's vpgatherdq; or
    // the portable fill and the AVX2 LUT's scalar table loads
    const bool portable_fill = variant == 1;
    if (portable_fill && isa == Isa::scalar) continue;  // (no oneDNN engine on the scalar path)
    IsaScope scope(isa);
    detail::set_terms_scalar_fill(portable_fill);
    detail::set_lut_avx2_loads(variant);
    for (const Shape& s : kShapes) {
      std::vector<std::string> all(std::begin(specs), std::end(specs));
      all.push_back(lut);
      for (const std::string& spec : all) {
        for (const char* mode : {"lut", "functional"}) {
          if (spec.rfind("lut:", 0) == 0 && std::string(mode) == "functional") continue;
          CAPTURE(spec);
          const std::string mode_s = mode;
          CAPTURE(mode_s);
          const std::string isa_s = frugal::util::isa_name(isa);
          CAPTURE(isa_s);
          CAPTURE(portable_fill);
          CAPTURE(s.h);
          CAPTURE(s.oc);
          CAPTURE(s.groups);
          ApproxSpec as;
          as.multiplier = spec;
          as.mode = mode;
          ApproxConv2d conv(as, s.ic, s.oc, s.kh, s.kw, s.stride, s.pad, s.groups);
          CAPTURE(conv.kernel_path());
          std::vector<float> wf(size_t(s.oc) * (s.ic / s.groups) * s.kh * s.kw);
          std::normal_distribution<float> nd(0, 1);
          for (auto& v : wf) v = nd(rng);
          conv.set_weights(wf.data(), nullptr);
          std::vector<uint8_t> src(size_t(s.n) * s.h * s.w * s.ic);
          random_codes(rng, src);
          const int oh = conv.out_h(s.h), ow = conv.out_w(s.w);
          std::vector<int32_t> got(size_t(s.n) * oh * ow * s.oc, -7), ref(got.size());
          uint8_t pad_code = 37;
          conv.products(src.data(), s.n, s.h, s.w, pad_code, got.data());
          conv2d_reference(conv.multiplier(), src.data(), s.n, s.h, s.w, s.ic, conv.weight_codes().data(), s.oc, s.kh,
                           s.kw, s.stride, s.pad, s.groups, pad_code, ref.data());
          size_t bad = 0;
          for (size_t i = 0; i < got.size(); ++i) bad += got[i] != ref[i];
          CHECK(bad == 0);
        }
      }
    }
  }
  detail::set_terms_scalar_fill(false);
  detail::set_lut_avx2_loads(-1);
}

TEST_CASE("LUT kernels: new weights after a forward are used (the AVX2 path's 4-channel tables are rebuilt)") {
  std::mt19937 rng(12);
  std::normal_distribution<float> nd(0, 1);
  const Shape s{1, 6, 7, 8, 8, 3, 3, 1, 1, 1};
  ApproxSpec as;
  as.multiplier = "mitchell";
  for (Isa isa : kernel_isas())
  for (int loads : {0, 1}) {  // the AVX2 path's tables read by vpgatherdq, then by scalar loads
    const std::string isa_s = frugal::util::isa_name(isa);
    CAPTURE(isa_s);
    CAPTURE(loads);
    IsaScope scope(isa);
    detail::set_lut_avx2_loads(loads);
    ApproxConv2d conv(as, s.ic, s.oc, s.kh, s.kw, s.stride, s.pad, s.groups);
    std::vector<uint8_t> src(size_t(s.n) * s.h * s.w * s.ic);
    random_codes(rng, src);
    std::vector<float> wf(size_t(s.oc) * s.ic * s.kh * s.kw);
    std::vector<int32_t> got(size_t(s.n) * s.h * s.w * s.oc), ref(got.size());
    for (int round = 0; round < 2; ++round) {
      CAPTURE(round);
      for (auto& v : wf) v = nd(rng);
      conv.set_weights(wf.data(), nullptr);
      conv.products(src.data(), s.n, s.h, s.w, 0, got.data());
      conv2d_reference(conv.multiplier(), src.data(), s.n, s.h, s.w, s.ic, conv.weight_codes().data(), s.oc, s.kh,
                       s.kw, s.stride, s.pad, s.groups, 0, ref.data());
      CHECK(got == ref);
    }
  }
  detail::set_lut_avx2_loads(-1);
}

TEST_CASE("kernel_path names the path each kernel ISA takes") {
  ApproxSpec lut, fn, mit, lr;
  lut.multiplier = "mitchell";
  fn.multiplier = "drum:4", fn.mode = "functional";
  mit.multiplier = "mitchell", mit.mode = "functional";
  lr.multiplier = "mitchell", lr.mode = "lowrank:2";
  const auto& f = frugal::util::cpu_features();
  for (Isa isa : kernel_isas()) {
    const std::string isa_s = frugal::util::isa_name(isa);
    CAPTURE(isa_s);
    IsaScope scope(isa);
    const std::string p_lut = ApproxConv2d(lut, 16, 16, 3, 3, 1, 1, 1).kernel_path();
    const std::string p_fn = ApproxConv2d(fn, 16, 16, 3, 3, 1, 1, 1).kernel_path();
    const std::string p_mit = ApproxConv2d(mit, 16, 16, 3, 3, 1, 1, 1).kernel_path();
    const std::string p_lr = ApproxConv2d(lr, 16, 16, 3, 3, 1, 1, 1).kernel_path();
    MESSAGE(std::string(frugal::util::isa_name(isa)), ": ", p_lut, " | drum:4 ", p_fn, " | mitchell ", p_mit, " | lowrank:2 ", p_lr);
    if (isa == Isa::scalar) {
      CHECK(p_lut == "lut-scalar");
      CHECK(p_fn == "terms-scalar");
      CHECK(p_mit == "terms-scalar");
      CHECK(p_lr == "terms-scalar");
    } else if (isa == Isa::avx2) {
      CHECK(p_lut == (f.amd ? "lut-avx2-loads" : "lut-avx2-gather"));  // AMD's gathers are microcoded
      for (int loads : {0, 1}) {
        detail::set_lut_avx2_loads(loads);
        CHECK(ApproxConv2d(lut, 16, 16, 3, 3, 1, 1, 1).kernel_path() == (loads ? "lut-avx2-loads" : "lut-avx2-gather"));
      }
      detail::set_lut_avx2_loads(-1);
      if (onednn_avx2_vnni()) {  // the VNNI layout, on frugal's AVX-VNNI engine where oneDNN runs AVX2-VNNI
        CHECK(p_fn == "int8-vnni-avx2");
        CHECK(p_mit == "int8-vnni-avx2+terms-avx2");
        CHECK(p_lr == "int8-vnni-avx2");
      } else {
        // the split layout: the terms that take two parts run on the term engine alone; lowrank's exact product
        // (two 4-bit parts, 8 steps in int16) on the s16 engine
        CHECK(p_fn == "terms-avx2");
        CHECK(p_mit == "terms-avx2");
        CHECK(p_lr == "int8-s16-avx2");
      }
    } else {
      CHECK(p_lut == (f.avx512vbmi ? "lut-avx512-vbmi" : "lut-avx512"));
      const std::string terms = f.avx512vnni ? "terms-avx512-vnni" : "terms-avx2";
      if (onednn_plain_avx2()) {
        CHECK(p_fn == terms);
        CHECK(p_mit == terms);
      } else {
        CHECK(p_mit.find("+" + terms) != std::string::npos);
        // (oneDNN capped to AVX2-VNNI: the VNNI layout on frugal's AVX-VNNI engine)
        CHECK(p_fn.rfind(onednn_avx2_vnni() ? "int8-vnni-avx2" : "onednn-int8-", 0) == 0);
      }
    }
  }
}

TEST_CASE("signed min() term: images with only non-negative activations (no sign plane) stay bit-exact") {
  std::mt19937 rng(33);
  const Shape s{3, 7, 9, 20, 18, 3, 3, 1, 1, 1};
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> wf(size_t(s.oc) * s.ic * 9);
  for (auto& v : wf) v = nd(rng);
  std::vector<uint8_t> src(size_t(s.n) * s.h * s.w * s.ic);
  random_codes(rng, src);
  const size_t img = size_t(s.h) * s.w * s.ic;
  for (size_t i = 0; i < img; ++i) src[i] &= 0x7F;           // image 0: codes 0..127 (activations >= 0)
  for (size_t i = 2 * img; i < 3 * img; ++i) src[i] &= 0x7F;  // image 2 too; image 1 has negative ones
  for (Isa isa : kernel_isas())
    for (uint8_t pad_code : {uint8_t(0), uint8_t(0x90)}) {  // 0x90: a negative padding value
      const std::string isa_s = frugal::util::isa_name(isa);
      CAPTURE(isa_s);
      CAPTURE(int(pad_code));
      IsaScope scope(isa);
      ApproxSpec as;
      as.multiplier = "mitchell:signed", as.mode = "functional";
      ApproxConv2d conv(as, s.ic, s.oc, 3, 3, 1, 1, 1);
      conv.set_weights(wf.data(), nullptr);
      std::vector<int32_t> got(size_t(s.n) * s.h * s.w * s.oc), ref(got.size());
      conv.products(src.data(), s.n, s.h, s.w, pad_code, got.data());
      conv2d_reference(conv.multiplier(), src.data(), s.n, s.h, s.w, s.ic, conv.weight_codes().data(), s.oc, 3, 3, 1,
                       1, 1, pad_code, ref.data());
      CHECK(got == ref);
    }
}

TEST_CASE("forward with the exact multiplier matches a float conv within quantization error") {
  std::mt19937 rng(5);
  const Shape s{2, 8, 8, 6, 10, 3, 3, 1, 1, 1};
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> wf(size_t(s.oc) * s.ic * 9), bias(size_t(s.oc)), src(size_t(s.n) * s.h * s.w * s.ic);
  for (auto& v : wf) v = nd(rng) * 0.2f;
  for (auto& v : bias) v = nd(rng);
  for (auto& v : src) v = std::max(0.0f, nd(rng));  // post-ReLU
  std::vector<float> ref(size_t(s.n) * s.h * s.w * s.oc, 0.0f);
  for (int b = 0; b < s.n; ++b)
    for (int y = 0; y < s.h; ++y)
      for (int x = 0; x < s.w; ++x)
        for (int o = 0; o < s.oc; ++o) {
          double acc = bias[size_t(o)];
          for (int c = 0; c < s.ic; ++c)
            for (int ky = 0; ky < 3; ++ky)
              for (int kx = 0; kx < 3; ++kx) {
                int iy = y + ky - 1, ix = x + kx - 1;
                if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) continue;
                acc += double(src[((size_t(b) * s.h + iy) * s.w + ix) * s.ic + c]) *
                       wf[((size_t(o) * s.ic + c) * 3 + ky) * 3 + kx];
              }
          ref[((size_t(b) * s.h + y) * s.w + x) * s.oc + o] = float(acc);
        }
  for (const char* spec : {"exact", "exact:signed"})
    for (const char* mode : {"lut", "functional", "lowrank:2"}) {
      CAPTURE(spec);
      CAPTURE(mode);
      ApproxSpec as;
      as.multiplier = spec, as.mode = mode;
      ApproxConv2d conv(as, s.ic, s.oc, 3, 3, 1, 1, 1);
      conv.set_weights(wf.data(), bias.data());
      std::vector<float> dst(ref.size());
      conv.forward(src.data(), s.n, s.h, s.w, dst.data());
      double err = 0, mag = 0;
      for (size_t i = 0; i < ref.size(); ++i) err += std::abs(dst[i] - ref[i]), mag += std::abs(ref[i]);
      CHECK(err / mag < 0.02);
      // calibrated range gives the same result as the batch's own min/max
      float lo = *std::min_element(src.begin(), src.end()), hi = *std::max_element(src.begin(), src.end());
      conv.set_act_range(lo, hi);
      std::vector<float> dst2(ref.size());
      conv.forward(src.data(), s.n, s.h, s.w, dst2.data());
      CHECK(dst2 == dst);
    }
}

TEST_CASE("forward: the SIMD quantization and output passes give the same floats as the portable ones") {
  std::mt19937 rng(17);
  std::normal_distribution<float> nd(0, 1);
  for (Isa isa : kernel_isas())
  for (const Shape& s : kShapes)
    for (const char* spec : {"exact", "drum:4", "mitchell", "bam:0,6", "bam:1,4:signed", "mitchell:signed"})
      for (const char* mode : {"lut", "functional"})
        for (bool calibrated : {false, true}) {
          if (isa == Isa::scalar) continue;
          const std::string isa_s = frugal::util::isa_name(isa);
          CAPTURE(isa_s);
          CAPTURE(s.ic);
          CAPTURE(s.groups);
          CAPTURE(spec);
          CAPTURE(mode);
          IsaScope scope(isa);
          ApproxSpec as;
          as.multiplier = spec, as.mode = mode;
          ApproxConv2d conv(as, s.ic, s.oc, s.kh, s.kw, s.stride, s.pad, s.groups);
          std::vector<float> wf(size_t(s.oc) * (s.ic / s.groups) * s.kh * s.kw), bias(size_t(s.oc));
          std::vector<float> src(size_t(s.n) * s.h * s.w * s.ic);
          for (auto& v : wf) v = nd(rng);
          for (auto& v : bias) v = nd(rng);
          for (auto& v : src) v = nd(rng) + 0.5f;  // mostly positive: affine codes with a non-zero zero point
          conv.set_weights(wf.data(), bias.data());
          if (calibrated) conv.set_act_range(-0.7f, 1.3f);  // narrower than the data: clamping on both sides
          const size_t out = size_t(s.n) * conv.out_h(s.h) * conv.out_w(s.w) * s.oc;
          std::vector<float> fast(out), portable(out);
          conv.forward(src.data(), s.n, s.h, s.w, fast.data());
          frugal::util::set_kernel_isa(Isa::scalar);
          conv.forward(src.data(), s.n, s.h, s.w, portable.data());
          frugal::util::set_kernel_isa(isa);
          CHECK(fast == portable);
        }
}

TEST_CASE("linear layer equals the naive products") {
  std::mt19937 rng(9);
  ApproxSpec as;
  as.multiplier = "drum:4:signed";  // zero-centred data: sign-magnitude keeps the error relative to |x|
  as.mode = "functional";
  const int n = 5, in = 33, out = 19;
  ApproxLinear lin(as, in, out);
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> w(size_t(out) * in), src(size_t(n) * in), dst(size_t(n) * out);
  for (auto& v : w) v = nd(rng);
  for (auto& v : src) v = nd(rng);
  lin.set_weights(w.data(), nullptr);
  lin.forward(src.data(), n, dst.data());
  std::vector<uint8_t> codes(src.size());
  random_codes(rng, codes);
  std::vector<int32_t> got(size_t(n) * out), ref(got.size());
  lin.conv().products(codes.data(), 1, 1, n, 0, got.data());
  conv2d_reference(lin.conv().multiplier(), codes.data(), 1, 1, n, in, lin.conv().weight_codes().data(), out, 1, 1, 1,
                   0, 1, 0, ref.data());
  CHECK(got == ref);
  // float forward stays close to the float product despite drum:4's ~6 % relative error
  double err = 0, mag = 0;
  for (int b = 0; b < n; ++b)
    for (int o = 0; o < out; ++o) {
      double r = 0;
      for (int i = 0; i < in; ++i) r += double(src[size_t(b) * in + i]) * w[size_t(o) * in + i];
      err += std::abs(dst[size_t(b) * out + o] - r), mag += std::abs(r);
    }
  CHECK(err / mag < 0.15);
}

TEST_CASE("low-rank mode: error against the bit-exact path falls with the rank") {
  std::mt19937 rng(2);
  const Shape s{1, 8, 8, 16, 16, 3, 3, 1, 1, 1};
  std::vector<float> wf(size_t(s.oc) * s.ic * 9);
  std::normal_distribution<float> nd(0, 1);
  for (auto& v : wf) v = nd(rng);
  std::vector<uint8_t> src(size_t(s.n) * s.h * s.w * s.ic);
  random_codes(rng, src);
  for (const char* spec : {"mitchell", "bam:0,6", "drum:4:signed"}) {
    CAPTURE(spec);
    ApproxSpec exact_spec;
    exact_spec.multiplier = spec;
    ApproxConv2d ref_conv(exact_spec, s.ic, s.oc, 3, 3, 1, 1, 1);
    ref_conv.set_weights(wf.data(), nullptr);
    std::vector<int32_t> ref(size_t(s.h) * s.w * s.oc);
    ref_conv.products(src.data(), 1, s.h, s.w, 0, ref.data());
    double prev = 1e300, first = -1;
    for (int r : {0, 2, 8, 24}) {
      ApproxSpec ls = exact_spec;
      ls.mode = "lowrank:" + std::to_string(r);
      ApproxConv2d conv(ls, s.ic, s.oc, 3, 3, 1, 1, 1);
      conv.set_weights(wf.data(), nullptr);
      std::vector<float> got(ref.size());
      conv.products_float(src.data(), 1, s.h, s.w, 0, got.data());
      // the oneDNN int8 engines' portable source fill gives the same result as the SIMD one (pad code 37:
      // an explicit border)
      std::vector<float> simd(ref.size()), portable(ref.size());
      conv.products_float(src.data(), 1, s.h, s.w, 37, simd.data());
      detail::set_terms_scalar_fill(true);
      conv.products_float(src.data(), 1, s.h, s.w, 37, portable.data());
      detail::set_terms_scalar_fill(false);
      CHECK(simd == portable);
      double err = 0;
      for (size_t i = 0; i < ref.size(); ++i) err += std::abs(double(got[i]) - ref[i]);
      err /= double(ref.size());
      MESSAGE(spec, " rank ", r, ": mean |lowrank - bitexact| per output = ", err);
      CHECK(err <= prev * 1.0001);  // bam and drum errors have exact rank <= 6 and 2: flat after that
      if (first < 0) first = err;
      prev = err;
    }
    // the factors are int8 (one scale shared by the terms): where the table's rank is reached (bam 6, drum 2) what
    // remains is their rounding, about 1/45 of the uncorrected error for sign-magnitude drum:4 here
    CHECK(prev < first / 30);
  }
  CHECK(lowrank_table_mae(*make_multiplier("mitchell"), 8) < lowrank_table_mae(*make_multiplier("mitchell"), 2));
  CHECK(lowrank_table_mae(*make_multiplier("drum:4"), 2) < 1e-6);  // f(a)f(b) - ab has rank 2
  {}
}

TEST_CASE("low-rank mode: the oneDNN split (AVX2) and VNNI layouts give the same result") {
  if (!frugal::util::isa_available(Isa::avx512) || !frugal::util::isa_available(Isa::avx2)) {
    MESSAGE("skipped: needs both the avx512 and avx2 kernel paths");
    return;
  }
  std::mt19937 rng(4);
  std::normal_distribution<float> nd(0, 1);
  const Shape s{2, 7, 9, 16, 16, 3, 3, 1, 1, 1};
  // rank 6: 6 source parts (one per factor) in the split layout, more than one 4-term chunk of the AVX2 source fill
  for (const char* mode : {"lowrank:2", "lowrank:6"})
  for (const char* spec : {"mitchell", "mitchell:signed", "drum:4:signed"}) {
    CAPTURE(spec);
    CAPTURE(std::string(mode));
    ApproxSpec as;
    as.multiplier = spec, as.mode = mode;
    std::vector<float> wf(size_t(s.oc) * s.ic * 9), bias(size_t(s.oc)), x(size_t(s.n) * s.h * s.w * s.ic);
    for (auto& v : wf) v = nd(rng);
    for (auto& v : bias) v = nd(rng);
    for (auto& v : x) v = nd(rng) + 0.3f;
    std::vector<uint8_t> codes(x.size());
    random_codes(rng, codes);
    std::vector<float> got[2], fwd[2];
    std::string path[2];
    for (int k = 0; k < 2; ++k) {
      IsaScope scope(k == 0 ? Isa::avx512 : Isa::avx2);
      ApproxConv2d conv(as, s.ic, s.oc, 3, 3, 1, 1, 1);
      conv.set_weights(wf.data(), bias.data());
      path[k] = conv.kernel_path();
      got[k].resize(size_t(s.n) * s.h * s.w * s.oc);
      fwd[k].resize(got[k].size());
      conv.products_float(codes.data(), s.n, s.h, s.w, 37, got[k].data());
      conv.forward(x.data(), s.n, s.h, s.w, fwd[k].data());
    }
    CAPTURE(path[0]);
    CAPTURE(path[1]);
    if (onednn_avx2_vnni())  // both layouts VNNI here (the split one is tested without the cap); u8 sources on
      // frugal's AVX-VNNI engine, s8 ones (signed multipliers) on oneDNN's
      CHECK(path[1] == (std::string(spec).find(":signed") != std::string::npos ? "onednn-int8-vnni" : "int8-vnni-avx2"));
    else
      CHECK(path[1] == "int8-s16-avx2");  // the exact product on the s16 engine, the factors on oneDNN's split
    CHECK(got[0] == got[1]);
    CHECK(fwd[0] == fwd[1]);
  }
}

TEST_CASE("oneDNN term conv: per-term source offsets on the split layout (one u8 part per narrow term)") {
  // terms whose A values span <= 128 but sit at different offsets ([-128, 0], [0, 128], [-64, 64]): one u8 part
  // each on the pre-VNNI layout (with a common offset they would need two), and the same sums as a direct loop
  std::mt19937 rng(21);
  const Shape s{2, 7, 9, 16, 8, 3, 3, 1, 1, 1};
  std::vector<std::array<double, 256>> am(3), bm(3);
  for (int c = 0; c < 256; ++c) {
    am[0][size_t(c)] = -(c & 0x80), bm[0][size_t(c)] = c;             // B in [0, 255]: weights stored as B - 128
    am[1][size_t(c)] = (c * 37) % 129, bm[1][size_t(c)] = c % 7;
    am[2][size_t(c)] = int8_t(uint8_t(c)) / 2, bm[2][size_t(c)] = 255 - c;
  }
  std::vector<uint8_t> wcodes(size_t(s.oc) * s.ic * 9), src(size_t(s.n) * s.h * s.w * s.ic);
  random_codes(rng, wcodes);
  random_codes(rng, src);
  for (Isa isa : kernel_isas()) {
    if (isa == Isa::scalar) continue;
    const std::string isa_s = frugal::util::isa_name(isa);
    CAPTURE(isa_s);
    IsaScope scope(isa);
    auto dn = OnednnTermConv::make(am, bm, s.ic, s.oc, 3, 3, 1, 1, 1);
    REQUIRE(dn);
    if (std::string(dn->path()) == "onednn-int8-split") CHECK(dn->channels() == 3 * s.ic);
    dn->set_weights(wcodes.data());
    for (uint8_t pad_code : {uint8_t(0), uint8_t(0x93)}) {
      CAPTURE(int(pad_code));
      std::vector<int32_t> got(size_t(s.n) * s.h * s.w * s.oc, -7);
      REQUIRE(dn->run_s32(src.data(), s.n, s.h, s.w, pad_code, got.data()));
      CHECK(got == terms_conv_reference(am, bm, s, src, wcodes, pad_code));
    }
  }
}

TEST_CASE("s16 engine: the split layout's own AVX2 conv is exact (SIMD and its scalar twin)") {
  if (!frugal::util::isa_available(Isa::avx2)) {
    MESSAGE("skipped: the s16 engine needs the avx2 kernel path");
    return;
  }
  if (onednn_avx2_vnni()) {
    MESSAGE("s16 engine skipped: oneDNN runs AVX2-VNNI here, so the avx2 kernel path takes the VNNI layout");
    return;
  }
  // Terms that take every branch of the engine: bits with a common factor (one part of 0/1 after division), two
  // terms with the same B merged into one part of 0..3, small values (12: int16 sums widened mid-window), an offset
  // term ([-128, 0]: 0/128 stored as 0/1), and 8-bit values (two 4-bit parts, 8 int16 steps). B in [0, 255]:
  // weights stored as B - 128 with the window-sum correction; a second set has symmetric s8 B values and a B out of
  // every int8 range at the skip code (0x80), which the weights never use.
  std::vector<std::array<double, 256>> am(5), bm(5), bs(2), as(2);
  for (int c = 0; c < 256; ++c) {
    am[0][size_t(c)] = c & 4, bm[0][size_t(c)] = c;
    am[1][size_t(c)] = c & 8, bm[1][size_t(c)] = c;
    am[2][size_t(c)] = c % 13, bm[2][size_t(c)] = (c * 7) % 256;
    am[3][size_t(c)] = -(c & 0x80), bm[3][size_t(c)] = c ^ 0x55;
    am[4][size_t(c)] = c, bm[4][size_t(c)] = 255 - c;
    as[0][size_t(c)] = (c & 0x40) ? 64 : 0, bs[0][size_t(c)] = c == 0x80 ? 300 : int8_t(uint8_t(c));
    as[1][size_t(c)] = int8_t(uint8_t(c)) < 0 ? -1 : 1, bs[1][size_t(c)] = c == 0x80 ? 300 : -int8_t(uint8_t(c));
  }
  const Shape shapes[] = {
      {2, 7, 9, 16, 20, 3, 3, 1, 1, 1},   // 9 = 5 + 4 pixels, 20 = 16 + 4 output channels
      {1, 10, 13, 8, 16, 3, 3, 2, 1, 1},  // stride 2, 8 channels (2 quads)
      {1, 6, 16, 24, 8, 3, 3, 1, 1, 1},   // 24 channels (quads not a compile-time case), 16 = 6 + 5 + 5
      {1, 5, 7, 32, 33, 1, 1, 1, 0, 1},   // 1x1, no padding, 3 blocks of output channels
      {1, 9, 8, 64, 16, 5, 3, 1, 2, 1},   // 5x3, 64 channels, wide padding
      {1, 30, 28, 128, 8, 3, 3, 2, 1, 1}, // 128 channels: the source rows of an image take several L2 tiles
  };
  std::mt19937 rng(31);
  IsaScope scope(Isa::avx2);
  for (int set = 0; set < 2; ++set) {
    const auto& A = set == 0 ? am : as;
    const auto& B = set == 0 ? bm : bs;
    const int skip = set == 0 ? -1 : 0x80;
    for (const Shape& s : shapes)
      for (int mode : {1, 2, 0})  // SIMD, scalar twin, oneDNN (the same sums)
      for (int fill : {0, 1, 2}) {  // the source fill by vpgatherdd, by scalar loads, by the portable loop
        CAPTURE(set);
        CAPTURE(mode);
        CAPTURE(fill);
        detail::set_terms_fill_loads(fill == 1 ? 1 : 0);
        detail::set_terms_scalar_fill(fill == 2);
        CAPTURE(s.ic);
        CAPTURE(s.w);
        detail::set_terms_s16(mode);
        auto dn = OnednnTermConv::make(A, B, s.ic, s.oc, s.kh, s.kw, s.stride, s.pad, 1, skip);
        detail::set_terms_s16(-1);
        REQUIRE(dn);
        const std::string path = dn->path();
        CHECK(path == (mode == 0 ? "onednn-int8-split" : "int8-s16-avx2"));
        std::vector<uint8_t> wcodes = random_weight_codes(rng, size_t(s.oc) * s.ic * s.kh * s.kw, skip),
                             src(size_t(s.n) * s.h * s.w * s.ic);
        random_codes(rng, src);
        for (int k = 0; k < 64; ++k) src[size_t(k)] = 0xFF, wcodes[size_t(k)] = 0xFF;  // large values together
        dn->set_weights(wcodes.data());
        const int OH = (s.h + 2 * s.pad - s.kh) / s.stride + 1, OW = (s.w + 2 * s.pad - s.kw) / s.stride + 1;
        for (uint8_t pad_code : {uint8_t(0), uint8_t(0xC7)}) {
          CAPTURE(int(pad_code));
          std::vector<int32_t> got(size_t(s.n) * OH * OW * s.oc, -7);
          REQUIRE(dn->run_s32(src.data(), s.n, s.h, s.w, pad_code, got.data()));
          const std::vector<int32_t> ref = terms_conv_reference(A, B, s, src, wcodes, pad_code);
          size_t bad = 0;
          for (size_t i = 0; i < got.size(); ++i) bad += got[i] != ref[i];
          CHECK(bad == 0);
        }
      }
  }
  detail::set_terms_fill_loads(-1);
  detail::set_terms_scalar_fill(false);
  // bam's narrow form runs on the engine by default on the split layout (it saves multiplies there); functional
  // terms that take two parts each (drum) leave it for the term engine (term_engine.cpp init_functional)
  ApproxSpec bam, drum;
  bam.multiplier = "bam:0,6", bam.mode = "functional";
  drum.multiplier = "drum:4:signed", drum.mode = "functional";
  const std::string p_bam = ApproxConv2d(bam, 16, 16, 3, 3, 1, 1, 1).kernel_path();
  const std::string p_drum = ApproxConv2d(drum, 16, 16, 3, 3, 1, 1, 1).kernel_path();
  CHECK(p_bam == "int8-s16-avx2");
  CHECK(p_drum.find("s16") == std::string::npos);
}

TEST_CASE("s16 engine: int16 sums at their bound (every pixel and weight at the extreme code) stay exact") {
  if (!frugal::util::isa_available(Isa::avx2) || onednn_avx2_vnni()) {
    MESSAGE("skipped: needs the avx2 kernel path with the split layout");
    return;
  }
  // One term per case; every source code and the padding at the code of its largest stored value, every weight at
  // the code of the smallest (or largest) stored weight: one int16 lane then gains the most each step, and a step
  // count one above s16_steps' wraps it.
  struct Case {
    const char* name;
    std::function<double(int)> a, b;
    uint8_t ca;
  };
  const Case cases[] = {
      {"8-bit a, B in [0, 255] (4-bit parts, weights B - 128)", [](int c) { return double(c); },
       [](int c) { return double(c); }, 0xFF},
      {"a & 127 (one part of 0..127, widened after every step)", [](int c) { return double(c & 127); },
       [](int c) { return double(int8_t(uint8_t(c))); }, 0x7F},
      {"12 x (a % 11) (one part of 0..10, scale 12)", [](int c) { return 12.0 * (c % 11); },
       [](int c) { return double(int8_t(uint8_t(c))); }, 10},
  };
  IsaScope scope(Isa::avx2);
  for (const Case& k : cases)
    for (int ic : {8, 64, 128})  // widening at tap boundaries, or inside a tap
      for (int wsel : {0, 1})    // the weight code with the smallest / largest stored weight
        for (int mode : {1, 2}) {
          CAPTURE(std::string(k.name));
          CAPTURE(ic);
          CAPTURE(wsel);
          CAPTURE(mode);
          std::vector<std::array<double, 256>> am(1), bm(1);
          for (int c = 0; c < 256; ++c) am[0][size_t(c)] = k.a(c), bm[0][size_t(c)] = k.b(c);
          int cb = 0;
          for (int c = 0; c < 256; ++c)
            if (wsel == 0 ? bm[0][size_t(c)] < bm[0][size_t(cb)] : bm[0][size_t(c)] > bm[0][size_t(cb)]) cb = c;
          const Shape s{1, 4, 5, ic, 16, 3, 3, 1, 1, 1};
          detail::set_terms_s16(mode);
          auto dn = OnednnTermConv::make(am, bm, s.ic, s.oc, 3, 3, 1, 1, 1);
          detail::set_terms_s16(-1);
          REQUIRE(dn);
          REQUIRE(std::string(dn->path()) == "int8-s16-avx2");
          std::vector<uint8_t> wcodes(size_t(s.oc) * s.ic * 9, uint8_t(cb)), src(size_t(s.h) * s.w * s.ic, k.ca);
          dn->set_weights(wcodes.data());
          std::vector<int32_t> got(size_t(s.h) * s.w * s.oc, -7);
          REQUIRE(dn->run_s32(src.data(), 1, s.h, s.w, k.ca, got.data()));
          const int64_t want = int64_t(9) * ic * int64_t(am[0][k.ca]) * int64_t(bm[0][size_t(cb)]);
          size_t bad = 0;
          for (int32_t v : got) bad += v != want;
          CHECK(bad == 0);
        }
}

TEST_CASE("VNNI engine: the VNNI layout's own AVX-VNNI conv is exact (SIMD and its scalar twin)") {
  if (!frugal::util::cpu_features().avxvnni) {
    MESSAGE("skipped: this CPU lacks AVX-VNNI");
    return;
  }
  // u8 A values over the whole byte range; B in [0, 255] (stored B - 128) or symmetric s8
  std::vector<std::array<double, 256>> am(3), bm(3), as(2), bs(2);
  for (int c = 0; c < 256; ++c) {
    am[0][size_t(c)] = c, bm[0][size_t(c)] = c;
    am[1][size_t(c)] = c & 0xF0, bm[1][size_t(c)] = 255 - c;
    am[2][size_t(c)] = (c * 37) % 256, bm[2][size_t(c)] = (c * 7) % 256;
    as[0][size_t(c)] = c, bs[0][size_t(c)] = c == 0x80 ? 0 : int8_t(uint8_t(c));
    as[1][size_t(c)] = c ^ 0xFF, bs[1][size_t(c)] = c == 0x80 ? 0 : -int8_t(uint8_t(c));
  }
  const Shape shapes[] = {
      {2, 7, 9, 16, 20, 3, 3, 1, 1, 1},
      {1, 10, 13, 8, 16, 3, 3, 2, 1, 1},
      {1, 6, 16, 24, 8, 3, 3, 1, 1, 1},
      {1, 5, 7, 32, 33, 1, 1, 1, 0, 1},
  };
  std::mt19937 rng(32);
  int tested = 0;
  for (Isa isa : kernel_isas()) {
    if (isa == Isa::scalar) continue;
    IsaScope scope(isa);
    for (int set = 0; set < 2; ++set) {
      const auto& A = set == 0 ? am : as;
      const auto& B = set == 0 ? bm : bs;
      const int skip = set == 0 ? -1 : 0x80;
      for (const Shape& s : shapes) {
        detail::set_terms_s16(0);
        auto plain = OnednnTermConv::make(A, B, s.ic, s.oc, s.kh, s.kw, s.stride, s.pad, 1, skip);
        if (!plain || std::string(plain->path()) != "onednn-int8-vnni") continue;  // (the split layout here)
        for (int mode : {1, 2}) {  // SIMD, scalar twin
          const std::string isa_s = frugal::util::isa_name(isa);
          CAPTURE(isa_s);
          CAPTURE(set);
          CAPTURE(mode);
          CAPTURE(s.ic);
          detail::set_terms_s16(mode);
          auto dn = OnednnTermConv::make(A, B, s.ic, s.oc, s.kh, s.kw, s.stride, s.pad, 1, skip);
          detail::set_terms_s16(-1);
          REQUIRE(dn);
          CHECK(std::string(dn->path()) == "int8-vnni-avx2");
          std::vector<uint8_t> wcodes = random_weight_codes(rng, size_t(s.oc) * s.ic * s.kh * s.kw, skip),
                               src(size_t(s.n) * s.h * s.w * s.ic);
          random_codes(rng, src);
          dn->set_weights(wcodes.data());
          plain->set_weights(wcodes.data());
          const int OH = (s.h + 2 * s.pad - s.kh) / s.stride + 1, OW = (s.w + 2 * s.pad - s.kw) / s.stride + 1;
          for (uint8_t pad_code : {uint8_t(0), uint8_t(0xC7)}) {
            CAPTURE(int(pad_code));
            std::vector<int32_t> got(size_t(s.n) * OH * OW * s.oc, -7), ref(got.size(), 5);
            REQUIRE(dn->run_s32(src.data(), s.n, s.h, s.w, pad_code, got.data()));
            REQUIRE(plain->run_s32(src.data(), s.n, s.h, s.w, pad_code, ref.data()));  // oneDNN's, exact
            size_t bad = 0;
            for (size_t i = 0; i < got.size(); ++i) bad += got[i] != ref[i];
            CHECK(bad == 0);
            ++tested;
          }
        }
      }
    }
  }
  detail::set_terms_s16(-1);
  if (!tested) MESSAGE("VNNI engine not tested: no kernel path takes the VNNI layout here");
  if (onednn_avx2_vnni()) {  // where oneDNN runs AVX2-VNNI, bam's terms run on the engine by default
    IsaScope scope(Isa::avx2);
    ApproxSpec bam;
    bam.multiplier = "bam:0,6", bam.mode = "functional";
    CHECK(ApproxConv2d(bam, 16, 16, 3, 3, 1, 1, 1).kernel_path() == "int8-vnni-avx2");
  }
}

TEST_CASE("bad kernel configurations are rejected") {
  ApproxSpec as;
  CHECK_THROWS_AS(ApproxConv2d(as, 6, 4, 3, 3, 1, 1, 4), frugal::Error);  // 6 % 4
  as.mode = "gather";
  CHECK_THROWS_AS(ApproxConv2d(as, 4, 4, 3, 3, 1, 1, 1), frugal::Error);
  as.mode = "functional";
  as.weight_bits = 12;
  CHECK_THROWS_AS(ApproxConv2d(as, 4, 4, 3, 3, 1, 1, 1), frugal::Error);
  as.weight_bits = 8;
  as.mode = "lowrank:x";
  CHECK_THROWS_AS(ApproxConv2d(as, 4, 4, 3, 3, 1, 1, 1), frugal::Error);
  auto path = (std::filesystem::temp_directory_path() / "frugal_kernels_mitchell.bin").string();
  write_lut_file(path, build_table(*make_multiplier("mitchell")), false);
  ApproxSpec lf;
  lf.multiplier = "lut:" + path;
  lf.mode = "functional";
  CHECK_THROWS_AS(ApproxConv2d(lf, 4, 4, 3, 3, 1, 1, 1), frugal::Error);
  ApproxSpec ok;
  ApproxConv2d c(ok, 4, 4, 3, 3, 1, 1, 1);
  std::vector<float> src(16 * 4), dst(16 * 4);
  CHECK_THROWS_AS(c.forward(src.data(), 1, 4, 4, dst.data()), frugal::Error);  // no weights
}

namespace {
// diff_src and w_grad of the table-gradient backward by direct loops over every product (the scalar twin).
void table_backward_reference(ApproxConv2d& conv, const Shape& s, const std::vector<float>& src,
                              const std::vector<float>& dd, std::vector<float>& ds, std::vector<float>& wg) {
  const Multiplier& m = conv.multiplier();
  TableGradient tg = table_gradient(m);
  QuantParams aq = conv.act_params(src.data(), src.size());
  std::vector<int32_t> q(src.size());
  quantize(src.data(), src.size(), aq, q.data());
  const float sa = aq.scale[0];
  const int32_t za = aq.zero_point[0];
  const QuantParams& wq = conv.weight_params();
  const auto& wc = conv.weight_codes();
  const int OH = conv.out_h(s.h), OW = conv.out_w(s.w), icg = s.ic / s.groups, ocg = s.oc / s.groups;
  const int K = icg * s.kh * s.kw;
  ds.assign(src.size(), 0.0f);
  wg.assign(size_t(s.oc) * K, 0.0f);
  std::vector<double> dsd(ds.size(), 0.0), wgd(wg.size(), 0.0);
  for (int b = 0; b < s.n; ++b)
    for (int oy = 0; oy < OH; ++oy)
      for (int ox = 0; ox < OW; ++ox)
        for (int o = 0; o < s.oc; ++o) {
          const double g = dd[((size_t(b) * OH + oy) * OW + ox) * s.oc + o];
          const size_t ch = wq.channel_of(size_t(o) * K);
          const int grp = o / ocg;
          for (int c = 0; c < icg; ++c)
            for (int ky = 0; ky < s.kh; ++ky)
              for (int kx = 0; kx < s.kw; ++kx) {
                const int iy = oy * s.stride - s.pad + ky, ix = ox * s.stride - s.pad + kx;
                const bool in = iy >= 0 && iy < s.h && ix >= 0 && ix < s.w;
                const size_t si = in ? ((size_t(b) * s.h + iy) * s.w + ix) * s.ic + size_t(grp) * icg + c : 0;
                const uint8_t ac = in ? code(q[si]) : code(za);
                const size_t wi = ((size_t(o) * icg + c) * s.kh + ky) * s.kw + kx;
                const size_t t = size_t(ac) * 256 + wc[wi];
                if (in) dsd[si] += g * wq.scale[ch] * (double(tg.d_da[t]) - wq.zero_point[ch]);
                wgd[wi] += g * sa * (double(tg.d_db[t]) - za);
              }
        }
  for (size_t i = 0; i < ds.size(); ++i) ds[i] = float(dsd[i]);
  for (size_t i = 0; i < wg.size(); ++i) wg[i] = float(wgd[i]);
}

double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0, m = 0;
  for (size_t i = 0; i < a.size(); ++i) e += std::abs(double(a[i]) - b[i]), m += std::abs(double(b[i]));
  return m > 0 ? e / m : e;
}
}  // namespace

TEST_CASE("table-gradient backward equals direct loops over every product (strides, padding, groups)") {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0, 1);
  for (const Shape& s : kShapes)
    for (const char* spec : {"drum:4", "mitchell:signed"}) {
      CAPTURE(spec);
      CAPTURE(s.ic);
      ApproxSpec as;
      as.multiplier = spec;
      ApproxConv2d conv(as, s.ic, s.oc, s.kh, s.kw, s.stride, s.pad, s.groups);
      std::vector<float> wf(size_t(s.oc) * (s.ic / s.groups) * s.kh * s.kw), src(size_t(s.n) * s.h * s.w * s.ic);
      for (auto& v : wf) v = nd(rng) * 0.3f;
      for (auto& v : src) v = std::max(0.0f, nd(rng));
      conv.set_weights(wf.data(), nullptr);
      const int OH = conv.out_h(s.h), OW = conv.out_w(s.w);
      std::vector<float> dst(size_t(s.n) * OH * OW * s.oc), dd(dst.size());
      conv.forward(src.data(), s.n, s.h, s.w, dst.data());
      for (auto& v : dd) v = nd(rng);
      std::vector<float> ds(src.size()), wg(wf.size()), rds, rwg;
      conv.backward_table(dd.data(), s.n, s.h, s.w, ds.data(), wg.data());
      table_backward_reference(conv, s, src, dd, rds, rwg);
      CHECK(rel_diff(ds, rds) < 1e-5);
      CHECK(rel_diff(wg, rwg) < 1e-5);
    }
}

TEST_CASE("table-gradient backward of the exact multiplier is the float conv backward within quantization error") {
  std::mt19937 rng(12);
  std::normal_distribution<float> nd(0, 1);
  const Shape s{2, 8, 8, 6, 10, 3, 3, 1, 1, 1};
  std::vector<float> wf(size_t(s.oc) * s.ic * 9), src(size_t(s.n) * s.h * s.w * s.ic), dd(size_t(s.n) * 64 * s.oc);
  for (auto& v : wf) v = nd(rng) * 0.2f;
  for (auto& v : src) v = std::max(0.0f, nd(rng));
  for (auto& v : dd) v = nd(rng);
  // float reference: diff_src = conv_transpose(dd, w), w_grad = correlation of src and dd (padding reads 0)
  std::vector<double> ds(src.size(), 0.0), wg(wf.size(), 0.0);
  for (int b = 0; b < s.n; ++b)
    for (int y = 0; y < 8; ++y)
      for (int x = 0; x < 8; ++x)
        for (int o = 0; o < s.oc; ++o)
          for (int c = 0; c < s.ic; ++c)
            for (int ky = 0; ky < 3; ++ky)
              for (int kx = 0; kx < 3; ++kx) {
                int iy = y + ky - 1, ix = x + kx - 1;
                if (iy < 0 || iy >= 8 || ix < 0 || ix >= 8) continue;
                double g = dd[((size_t(b) * 8 + y) * 8 + x) * s.oc + o];
                size_t si = ((size_t(b) * 8 + iy) * 8 + ix) * s.ic + c, wi = ((size_t(o) * s.ic + c) * 3 + ky) * 3 + kx;
                ds[si] += g * wf[wi];
                wg[wi] += g * src[si];
              }
  for (const char* spec : {"exact", "exact:signed"}) {
    CAPTURE(spec);
    ApproxSpec as;
    as.multiplier = spec;
    ApproxConv2d conv(as, s.ic, s.oc, 3, 3, 1, 1, 1);
    conv.set_weights(wf.data(), nullptr);
    std::vector<float> dst(dd.size()), gds(src.size()), gwg(wf.size());
    conv.forward(src.data(), s.n, s.h, s.w, dst.data());
    conv.backward_table(dd.data(), s.n, s.h, s.w, gds.data(), gwg.data());
    CHECK(rel_diff(gds, std::vector<float>(ds.begin(), ds.end())) < 0.02);
    CHECK(rel_diff(gwg, std::vector<float>(wg.begin(), wg.end())) < 0.02);
  }
  ApproxSpec as;
  ApproxConv2d fresh(as, s.ic, s.oc, 3, 3, 1, 1, 1);
  fresh.set_weights(wf.data(), nullptr);
  std::vector<float> a(src.size()), b(wf.size());
  CHECK_THROWS_WITH_AS(fresh.backward_table(dd.data(), s.n, s.h, s.w, a.data(), b.data()),
                       doctest::Contains("forward() of the same batch"), frugal::Error);
}

TEST_CASE("new weights take effect on every engine (the term engine repacks lazily)") {
  std::mt19937 rng(21);
  const Shape s{2, 6, 6, 8, 16, 3, 3, 1, 1, 1};
  for (Isa isa : kernel_isas())
    for (const char* spec : {"drum:4", "mitchell", "bam:1,4:signed"}) {
      CAPTURE(spec);
      const std::string isa_s = frugal::util::isa_name(isa);
      CAPTURE(isa_s);
      IsaScope scope(isa);
      ApproxSpec as;
      as.multiplier = spec, as.mode = "functional";
      ApproxConv2d conv(as, s.ic, s.oc, 3, 3, 1, 1, 1);
      std::vector<uint8_t> src(size_t(s.n) * s.h * s.w * s.ic);
      random_codes(rng, src);
      std::normal_distribution<float> nd(0, 1);
      for (int round = 0; round < 2; ++round) {
        std::vector<float> wf(size_t(s.oc) * s.ic * 9);
        for (auto& v : wf) v = nd(rng);
        conv.set_weights(wf.data(), nullptr);
        std::vector<int32_t> got(size_t(s.n) * s.h * s.w * s.oc), ref(got.size());
        conv.products(src.data(), s.n, s.h, s.w, 5, got.data());
        conv2d_reference(conv.multiplier(), src.data(), s.n, s.h, s.w, s.ic, conv.weight_codes().data(), s.oc, 3, 3, 1,
                         1, 1, 5, ref.data());
        CHECK(got == ref);
      }
    }
}

TEST_CASE("symmetric activation codes keep 0.0 at code 0: approximate products of post-ReLU inputs stay small") {
  std::mt19937 rng(9);
  const int n = 2, h = 6, w = 6, ic = 16, oc = 8;
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> wf(static_cast<size_t>(oc) * ic * 9), bias(static_cast<size_t>(oc)), src(static_cast<size_t>(n) * h * w * ic);
  for (auto& v : wf) v = nd(rng) * 0.2f;
  for (auto& v : bias) v = nd(rng);
  for (auto& v : src) v = std::max(0.0f, nd(rng));  // post-ReLU: half the inputs are 0.0
  auto run = [&](const char* spec, bool sym, const std::vector<float>& x) {
    ApproxSpec as;
    as.multiplier = spec, as.mode = "functional", as.act_symmetric = sym;
    ApproxConv2d conv(as, ic, oc, 3, 3, 1, 1, 1);
    conv.set_weights(wf.data(), bias.data());
    std::vector<float> dst(size_t(n) * h * w * oc);
    conv.forward(x.data(), n, h, w, dst.data());
    QuantParams q = conv.act_params(x.data(), x.size());
    return std::make_pair(dst, q.zero_point[0]);
  };
  auto [ref, zr] = run("exact:signed", true, src);
  CHECK(zr == 0);
  double err_aff = 0, err_sym = 0;
  for (const char* spec : {"drum:4:signed", "mitchell:signed"}) {
    CAPTURE(spec);
    auto [aff, za] = run(spec, false, src);
    auto [sym, zs] = run(spec, true, src);
    CHECK(za == -128);  // affine over [0, max]: 0.0 is code -128
    CHECK(zs == 0);
    for (size_t i = 0; i < ref.size(); ++i) err_aff += std::abs(aff[i] - ref[i]), err_sym += std::abs(sym[i] - ref[i]);
    // an all-zero input (except one element, which sets the scale) gives the bias exactly away from that element
    std::vector<float> z(src.size(), 0.0f);
    z[0] = 1.0f;
    auto [zo, zz] = run(spec, true, z);
    CHECK(zz == 0);
    for (int px = 2 * w; px < n * h * w; ++px)  // pixels whose window misses element 0
      for (int o = 0; o < oc; ++o) CHECK(zo[size_t(px) * oc + o] == bias[size_t(o)]);
  }
  CHECK(err_sym * 2 < err_aff);  // 82 vs 211 here (mean |error| summed over drum:4 and mitchell)
}

TEST_CASE("layers built from one multiplier share it and its table, and compute what a layer of their own does") {
  const std::shared_ptr<const Multiplier> m = make_multiplier("mitchell");
  const std::vector<int32_t>& t = m->table();
  CHECK(&m->table() == &t);  // built once
  CHECK(t == build_table(*m));
  const TableGradient& g = m->gradient();
  CHECK(&m->gradient() == &g);
  CHECK(g.d_da == table_gradient(*m).d_da);
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0, 1);
  for (const char* mode : {"lut", "functional", "lowrank:2"}) {
    CAPTURE(mode);
    ApproxSpec as;
    as.multiplier = "mitchell";
    as.mode = mode;
    ApproxConv2d a(as, m, 8, 4, 3, 3, 1, 1, 1), b(as, m, 8, 8, 1, 1, 1, 0, 1), own(as, 8, 4, 3, 3, 1, 1, 1);
    CHECK(&a.multiplier() == m.get());
    CHECK(&b.multiplier() == m.get());
    CHECK(&own.multiplier() != m.get());
    std::vector<float> w(4 * 8 * 9), x(2 * 5 * 5 * 8), ya(2 * 5 * 5 * 4), yo(ya.size());
    for (auto& v : w) v = nd(rng);
    for (auto& v : x) v = nd(rng);
    a.set_weights(w.data(), nullptr);
    own.set_weights(w.data(), nullptr);
    a.forward(x.data(), 2, 5, 5, ya.data());
    own.forward(x.data(), 2, 5, 5, yo.data());
    CHECK(ya == yo);
  }
  ApproxLinear lin(ApproxSpec{}, m, 6, 3);
  CHECK(&lin.conv().multiplier() == m.get());
}
