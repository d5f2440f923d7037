#include "gradcomp/exchange.h"

#include <tbb/parallel_for.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <sstream>

#include "gradcomp/compressors.h"
#include "util/check.h"

namespace frugal::gradcomp {

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ")";
  return os.str();
}
}  // namespace


struct GradientExchange::Slot {
  std::vector<int64_t> shape;
  size_t n = 0;
  std::string codec;         // spec actually used ("none" when kept dense)
  std::string dense_reason;  // empty when compressed
  Mode mode = Mode::allreduce;
  std::vector<std::unique_ptr<Compressor>> c;  // one per local worker
  CastCompressor dense{Kind::dense};           // dense steps of a multi-round compressor
  std::vector<float> velocity;                 // dgc runs: heavy-ball momentum for dense tensors
};

namespace {
constexpr uint32_t kStateMagic = 0x32434746;  // "FGC2" (counters with encoded and handed-over bytes)

void put_counters(ByteWriter& w, const ExchangeCounters& c) {
  w.u64(uint64_t(c.steps));
  for (double v : {c.bytes_sent, c.bytes_allreduce, c.bytes_allgather, c.bytes_dense_fp32, c.encode_s, c.decode_s,
                   c.comm_s, c.rel_l2_err_sum, c.cosine_sum, c.bytes_encoded, c.bytes_handed_to_comm}) {
    uint64_t u;
    std::memcpy(&u, &v, 8);
    w.u64(u);
  }
  w.u64(uint64_t(c.error_samples));
}

void get_counters(ByteReader& r, ExchangeCounters& c) {
  c.steps = int64_t(r.u64());
  for (double* v : {&c.bytes_sent, &c.bytes_allreduce, &c.bytes_allgather, &c.bytes_dense_fp32, &c.encode_s,
                    &c.decode_s, &c.comm_s, &c.rel_l2_err_sum, &c.cosine_sum, &c.bytes_encoded,
                    &c.bytes_handed_to_comm}) {
    uint64_t u = r.u64();
    std::memcpy(v, &u, 8);
  }
  c.error_samples = int64_t(r.u64());
}
}  // namespace

std::vector<uint8_t> GradientExchange::save_state() const {
  std::vector<uint8_t> out;
  ByteWriter w(out);
  w.u32(kStateMagic);
  w.u64(slots_.size());
  w.u64(uint64_t(local_));
  for (const auto& s : slots_) {
    w.u64(s->n);
    w.u64(s->c.size());
    for (const auto& c : s->c) c->save_state(w);
    put_floats(w, s->velocity);
  }
  put_counters(w, period_);
  put_counters(w, total_);
  return out;
}

void GradientExchange::load_state(const std::vector<uint8_t>& bytes) {
  ByteReader r(bytes.data(), bytes.size(), "gradient-exchange state in the checkpoint");
  if (r.u32() != kStateMagic) r.fail("not a gradient-exchange state");
  if (r.u64() != slots_.size()) r.fail("it was saved for another model (parameter count differs)");
  if (r.u64() != uint64_t(local_)) r.fail("it was saved with another number of in-process workers");
  for (auto& s : slots_) {
    if (r.u64() != s->n) r.fail("parameter sizes differ from this model's");
    if (r.u64() != s->c.size()) r.fail("compressor count differs");
    for (auto& c : s->c) c->load_state(r);
    get_floats(r, s->velocity, s->velocity.size(), true);
  }
  get_counters(r, period_);
  get_counters(r, total_);
  r.expect_end();
}

double ExchangeCounters::simulated_comm_s(const comm::Network& net) const {
  if (steps == 0) return 0;
  const double s = double(steps);
  if (pattern) return s * comm::comm_seconds(*pattern, bytes_sent / s, world, net);
  double t = 0;
  if (bytes_allreduce > 0) t += s * comm::comm_seconds(comm::Pattern::ring_allreduce, bytes_allreduce / s, world, net);
  if (bytes_allgather > 0) t += s * comm::comm_seconds(comm::Pattern::allgather, bytes_allgather / s, world, net);
  return t;
}

nlohmann::json ExchangeCounters::to_json() const {
  nlohmann::json j = {{"steps", steps},
                      {"bytes_sent_per_worker", bytes_sent},
                      {"bytes_allreduce_per_worker", bytes_allreduce},
                      {"bytes_allgather_per_worker", bytes_allgather},
                      {"bytes_encoded_per_worker", bytes_encoded},
                      {"bytes_dense_fp32_per_worker", bytes_dense_fp32},
                      {"ratio_vs_fp32", ratio_fp32()},
                      {"ratio_vs_fp16", ratio_fp16()},
                      {"encode_s", encode_s},
                      {"decode_s", decode_s},
                      {"comm_s", comm_s},
                      {"error_samples", error_samples},
                      {"rel_l2_err", rel_l2_err()},
                      {"cosine", cosine()},
                      {"world", world},
                      {"comm_pattern", pattern ? comm::pattern_name(*pattern) : "auto"},
                      {"simulated_comm_s_1gbit", simulated_comm_s({1e9, 50e-6})},
                      {"simulated_comm_s_10gbit", simulated_comm_s({1e10, 50e-6})}};
  if (over_comm) j["bytes_handed_to_comm_per_worker"] = bytes_handed_to_comm;
  return j;
}

GradientExchange::GradientExchange(const ExchangeOptions& opts, const std::vector<std::vector<int64_t>>& shapes,
                                   int local_workers, comm::Communicator* comm)
    : opts_(opts), local_(local_workers), comm_(comm), momentum_(opts.momentum), nesterov_(opts.nesterov) {
  FRUGAL_CHECK(local_workers >= 1, "gradient exchange: local_workers must be >= 1, got ", local_workers);
  world_ = comm ? comm->world() * local_workers : local_workers;
  rank_ = comm ? comm->rank() : 0;
  FRUGAL_CHECK(!shapes.empty(), "gradient exchange: no parameters");
  // the spec is built once up front (a bad spec fails even if every tensor ends up dense); its properties come
  // from the built object
  CompressorContext probe_ctx;
  probe_ctx.shape = {64, 64};
  const std::unique_ptr<Compressor> probe = make_compressor(opts.compressor, probe_ctx);
  handles_momentum_ = probe->applies_momentum();
  powersgd_dense_steps_ = opts.powersgd_dense_steps;
  if (!opts.comm_pattern.empty() && opts.comm_pattern != "auto") pattern_ = comm::parse_pattern(opts.comm_pattern);
  const bool needs_matrix = probe->needs_matrix();
  for (size_t p = 0; p < shapes.size(); ++p) {
    auto s = std::make_unique<Slot>();
    s->shape = shapes[p];
    s->n = shape_numel(shapes[p]);
    FRUGAL_CHECK(s->n > 0, "gradient exchange: parameter ", p, " has an empty shape ", shape_str(shapes[p]));
    const bool one_d = shapes[p].size() <= 1;
    if (s->n < opts.dense_below)
      s->dense_reason = "numel " + std::to_string(s->n) + " < dense_below " + std::to_string(opts.dense_below);
    else if (one_d && opts.dense_1d)
      s->dense_reason = "1-D tensor (dense_1d)";
    else if (one_d && needs_matrix)
      s->dense_reason = "1-D tensor (powersgd needs a matrix)";
    s->codec = s->dense_reason.empty() ? opts.compressor : "none";
    for (int w = 0; w < local_; ++w) {
      CompressorContext ctx;
      ctx.shape = shapes[p];
      ctx.seed = opts.seed;
      ctx.param_index = int(p);
      ctx.worker = rank_ * local_ + w;
      ctx.world = world_;
      ctx.error_feedback_default = opts.error_feedback_default;
      ctx.warmup_epochs = opts.warmup_epochs;
      s->c.push_back(make_compressor(s->codec, ctx));
    }
    if (s->c[0]->rounds() > 0) {
      s->mode = Mode::rounds;
      powersgd_dense_steps_ = std::max(powersgd_dense_steps_, s->c[0]->dense_steps());
    }
    else
      s->mode = s->c[0]->collective() == Collective::allreduce ? Mode::allreduce : Mode::allgather;
    if (handles_momentum_ && !s->dense_reason.empty()) s->velocity.assign(s->n, 0.0f);
    slots_.push_back(std::move(s));
  }
  period_.world = total_.world = world_;
  period_.pattern = total_.pattern = pattern_;
  period_.over_comm = total_.over_comm = comm_ != nullptr;
  if (comm_) {
    nlohmann::json d = describe();
    d["seed"] = opts.seed;
    d["local_workers"] = local_;
    comm::check_same_on_all_ranks(*comm_, "gradient exchange config", d.dump());
  }
}

GradientExchange::~GradientExchange() = default;

const Compressor& GradientExchange::compressor(int w, size_t p) const {
  FRUGAL_CHECK(w >= 0 && w < local_ && p < slots_.size(), "compressor(", w, ", ", p, ") out of range");
  return *slots_[p]->c[size_t(w)];
}

nlohmann::json GradientExchange::describe() const {
  nlohmann::json t = nlohmann::json::array();
  size_t dense = 0;
  for (size_t p = 0; p < slots_.size(); ++p) {
    const Slot& s = *slots_[p];
    const char* coll = s.mode == Mode::allgather ? "allgather" : "allreduce";
    t.push_back({{"index", p},
                 {"shape", s.shape},
                 {"numel", s.n},
                 {"codec", s.c[0]->name()},
                 {"collective", coll},
                 {"dense_reason", s.dense_reason}});
    if (!s.dense_reason.empty()) ++dense;
  }
  return {{"compressor", opts_.compressor},
          {"dense_rule", {{"dense_below", opts_.dense_below}, {"dense_1d", opts_.dense_1d}}},
          {"error_feedback_default", opts_.error_feedback_default},
          {"warmup_epochs", opts_.warmup_epochs},
          {"powersgd_dense_steps", powersgd_dense_steps_},
          {"comm_pattern", pattern_ ? comm::pattern_name(*pattern_) : "auto"},
          {"handles_momentum", handles_momentum_},
          {"world", world_},
          {"dense_tensors", dense},
          {"tensors", t}};
}

namespace {
/// inout[i] <- fp16(in[i] + inout[i]) and the bf16 twin: the sums of 16-bit allreduce bodies, identical in
/// the in-process exchange and in MPI's reduction.
void add_f16(const uint16_t* in, uint16_t* inout, size_t n) {
  for (size_t i = 0; i < n; ++i) inout[i] = f32_to_f16_ref(f16_to_f32_ref(in[i]) + f16_to_f32_ref(inout[i]));
}
void add_bf16(const uint16_t* in, uint16_t* inout, size_t n) {
  for (size_t i = 0; i < n; ++i) inout[i] = f32_to_bf16(bf16_to_f32(in[i]) + bf16_to_f32(inout[i]));
}

/// acc's body += msg's body (the last body.bytes() bytes of each), in the body's element type. The headers
/// must agree (same kind, size and shared-seed nonce on every worker).
void add_body(const Message& msg, Message& acc, const SummableBody& body, size_t p, int worker) {
  const size_t nb = body.bytes();
  FRUGAL_CHECK(msg.bytes.size() == acc.bytes.size() && msg.bytes.size() >= nb &&
                   std::memcmp(msg.bytes.data(), acc.bytes.data(), msg.bytes.size() - nb) == 0,
               "exchange: worker ", worker, "'s allreduce message for parameter ", p,
               " has another header than worker 0's (shared seed or step out of step)");
  const uint8_t* src = msg.bytes.data() + msg.bytes.size() - nb;
  uint8_t* dst = acc.bytes.data() + acc.bytes.size() - nb;
  if (body.type == SumType::f32) {
    for (size_t i = 0; i < body.count; ++i) {
      float a, b;
      std::memcpy(&a, dst + 4 * i, 4);
      std::memcpy(&b, src + 4 * i, 4);
      a += b;
      std::memcpy(dst + 4 * i, &a, 4);
    }
  } else {
    std::vector<uint16_t> a(body.count), b(body.count);
    std::memcpy(a.data(), dst, nb);
    std::memcpy(b.data(), src, nb);
    (body.type == SumType::f16 ? add_f16 : add_bf16)(b.data(), a.data(), body.count);
    std::memcpy(dst, a.data(), nb);
  }
}

}  // namespace

/// One exchange in flight: the messages of every (local worker, tensor), PowerSGD's round payloads, the flat
/// aggregated result and the sampled dense reference, with the step's byte counts and timings.
struct GradientExchange::Step {
  Step(std::vector<std::vector<float*>>& g, size_t local, size_t P) : grads(g), msgs(local, std::vector<Message>(P)),
      pbuf(local, std::vector<std::vector<float>>(P)), off(P) {}
  std::vector<std::vector<float*>>& grads;
  StepInfo info{};
  bool psgd_dense = false;                         // PowerSGD's dense warm-up steps: plain allreduce
  std::vector<std::vector<Message>> msgs;          // [worker][param]
  std::vector<std::vector<std::vector<float>>> pbuf;  // [worker][param]: the current round's payload
  std::vector<size_t> off;                         // param p's offset in result / ref
  size_t total_n = 0;
  std::vector<float> result;                       // aggregated gradient, flat
  std::vector<float> ref;                          // sampled steps: the dense reference, flat
  double b_ar = 0, b_ag = 0, b_enc = 0;            // bytes of this step, summed over local workers
  double encode_s = 0, decode_s = 0, comm_s = 0;
};

GradientExchange::Mode GradientExchange::mode_of(const Slot& s, const Step& st) const {
  return s.mode == Mode::rounds && st.psgd_dense ? Mode::allreduce : s.mode;
}

void GradientExchange::check_gradients(const std::vector<std::vector<float*>>& grads, int64_t step) const {
  const size_t P = slots_.size();
  FRUGAL_CHECK(grads.size() == size_t(local_), "exchange: got gradients of ", grads.size(), " workers, expected ",
               local_);
  for (int w = 0; w < local_; ++w) {
    FRUGAL_CHECK(grads[size_t(w)].size() == P, "exchange: worker ", w, " passed ", grads[size_t(w)].size(),
                 " gradient tensors, expected ", P);
    for (size_t p = 0; p < P; ++p) {
      const float* g = grads[size_t(w)][p];
      FRUGAL_CHECK(g, "exchange: worker ", w, " parameter ", p, " gradient pointer is null");
      for (size_t i = 0; i < slots_[p]->n; ++i)
        FRUGAL_CHECK(std::isfinite(g[i]), "non-finite gradient (", g[i], ") at element ", i, " of parameter ", p, " ",
                     shape_str(slots_[p]->shape), ", worker ", rank_ * local_ + w, ", step ", step,
                     "; lower the learning rate or enable gradient clipping");
    }
  }
}

// Every (worker, tensor) pair; PowerSGD computes its first round's payload (P) here.
void GradientExchange::encode_all(Step& st) {
  const size_t P = slots_.size();
  auto t0 = Clock::now();
  auto encode_one = [&](size_t task) {
    const size_t w = task / P, p = task % P;
    Slot& s = *slots_[p];
    Compressor& c = *s.c[w];
    if (s.mode == Mode::rounds) {
      if (st.psgd_dense) {
        s.dense.encode(st.grads[w][p], s.n, st.msgs[w][p]);
      } else {
        st.pbuf[w][p].resize(c.round_len(0));
        c.round_payload(0, st.grads[w][p], nullptr, st.pbuf[w][p].data());
      }
      return;
    }
    c.begin_step(st.info);
    c.encode(st.grads[w][p], s.n, st.msgs[w][p]);
  };
  const size_t tasks = size_t(local_) * P;
  if (opts_.parallel)
    tbb::parallel_for(size_t(0), tasks, encode_one);
  else
    for (size_t t = 0; t < tasks; ++t) encode_one(t);
  st.encode_s += since(t0);
}

// Dense reference (sampled steps only): the mean over all workers of the quantity each message approximates
// (Compressor::dense_reference), summed in global worker order. Tensors whose momentum the exchange applies
// itself (dense tensors of dgc runs) are filled in by apply_dense_momentum, after that momentum.
void GradientExchange::dense_reference(Step& st) {
  st.ref.assign(st.total_n, 0.0f);
  for (size_t p = 0; p < slots_.size(); ++p) {
    const Slot& s = *slots_[p];
    float* r = st.ref.data() + st.off[p];
    for (int w = 0; w < local_; ++w) {
      const float* d = s.c[size_t(w)]->dense_reference(st.grads[size_t(w)][p]);
      for (size_t i = 0; i < s.n; ++i) r[i] = w == 0 ? d[i] : r[i] + d[i];
    }
  }
  auto tc = Clock::now();
  if (comm_) comm_->allreduce_sum(st.ref.data(), st.ref.size());
  st.comm_s += since(tc);
  for (auto& v : st.ref) v /= float(world_);
}

// Bytes of this step, per local worker: what each hands to the collectives (see ExchangeCounters).
void GradientExchange::count_bytes(Step& st) const {
  for (int w = 0; w < local_; ++w)
    for (size_t p = 0; p < slots_.size(); ++p) {
      const Slot& s = *slots_[p];
      const Message& m = st.msgs[size_t(w)][p];
      if (s.mode == Mode::rounds && !st.psgd_dense) {
        const Compressor& c = *s.c[size_t(w)];
        double len = 0;
        for (int r = 0; r < c.rounds(); ++r) len += double(c.round_len(r));
        st.b_ar += 4.0 * len;
        st.b_enc += 4.0 * len;
      } else if (mode_of(s, st) == Mode::allgather) {
        st.b_ag += double(varint_size(m.bytes.size()) + m.bytes.size());
        st.b_enc += double(m.bytes.size());
      } else {
        const Compressor& dec = s.mode == Mode::rounds ? static_cast<const Compressor&>(s.dense) : *s.c[0];
        st.b_ar += double(dec.summable_body(s.n).bytes());
        st.b_enc += double(m.bytes.size());
      }
    }
}

// Summable payloads: bodies summed in worker order in their own type (fp32, fp16, bf16), then one allreduce per
// type over the ranks; the summed message decodes to the sum; average.
void GradientExchange::reduce_summable(Step& st) {
  auto t = Clock::now();
  std::vector<size_t> ar;
  for (size_t p = 0; p < slots_.size(); ++p)
    if (mode_of(*slots_[p], st) == Mode::allreduce) ar.push_back(p);
  auto decoder = [&](const Slot& s) -> const Compressor& {
    return s.mode == Mode::rounds ? static_cast<const Compressor&>(s.dense) : *s.c[0];
  };
  std::vector<Message> sum(ar.size());
  std::vector<SummableBody> body(ar.size());
  for (size_t j = 0; j < ar.size(); ++j) {
    const size_t p = ar[j];
    body[j] = decoder(*slots_[p]).summable_body(slots_[p]->n);
    sum[j] = std::move(st.msgs[0][p]);  // counted already; not read again
    for (int w = 1; w < local_; ++w) add_body(st.msgs[size_t(w)][p], sum[j], body[j], p, rank_ * local_ + w);
  }
  st.decode_s += since(t);
  if (comm_ && !ar.empty()) allreduce_bodies(sum, body, st);
  t = Clock::now();
  for (size_t j = 0; j < ar.size(); ++j) {
    const size_t p = ar[j];
    float* dst = st.result.data() + st.off[p];
    decoder(*slots_[p]).decode(sum[j], dst, slots_[p]->n);
    for (size_t i = 0; i < slots_[p]->n; ++i) dst[i] /= float(world_);
  }
  st.decode_s += since(t);
}

// The summed bodies over the ranks: one flat buffer per element type, in slot order, one allreduce each.
void GradientExchange::allreduce_bodies(std::vector<Message>& sum, const std::vector<SummableBody>& body, Step& st) {
  std::vector<float> f32;
  std::vector<uint16_t> f16, bf16;
  for (size_t j = 0; j < sum.size(); ++j) {
    const uint8_t* b = sum[j].bytes.data() + sum[j].bytes.size() - body[j].bytes();
    if (body[j].type == SumType::f32) {
      const size_t o = f32.size();
      f32.resize(o + body[j].count);
      std::memcpy(f32.data() + o, b, body[j].bytes());
    } else {
      auto& v = body[j].type == SumType::f16 ? f16 : bf16;
      const size_t o = v.size();
      v.resize(o + body[j].count);
      std::memcpy(v.data() + o, b, body[j].bytes());
    }
  }
  auto tc = Clock::now();
  if (!f32.empty()) comm_->allreduce_sum(f32.data(), f32.size());
  if (!f16.empty()) comm_->allreduce_sum_u16(f16.data(), f16.size(), add_f16);
  if (!bf16.empty()) comm_->allreduce_sum_u16(bf16.data(), bf16.size(), add_bf16);
  st.comm_s += since(tc);
  size_t o32 = 0, o16 = 0, obf = 0;
  for (size_t j = 0; j < sum.size(); ++j) {
    uint8_t* b = sum[j].bytes.data() + sum[j].bytes.size() - body[j].bytes();
    if (body[j].type == SumType::f32) {
      std::memcpy(b, f32.data() + o32, body[j].bytes());
      o32 += body[j].count;
    } else if (body[j].type == SumType::f16) {
      std::memcpy(b, f16.data() + o16, body[j].bytes());
      o16 += body[j].count;
    } else {
      std::memcpy(b, bf16.data() + obf, body[j].bytes());
      obf += body[j].count;
    }
  }
}

// Gathered payloads: every worker's message, in global worker order, then the compressor's aggregate.
void GradientExchange::gather_and_aggregate(Step& st) {
  std::vector<size_t> ag;
  for (size_t p = 0; p < slots_.size(); ++p)
    if (mode_of(*slots_[p], st) == Mode::allgather) ag.push_back(p);
  if (ag.empty()) return;
  // all[g][j]: global worker g's message for gathered slot j
  std::vector<std::vector<Message>> remote;
  std::vector<std::vector<const Message*>> all(static_cast<size_t>(world_), std::vector<const Message*>(ag.size()));
  if (!comm_) {
    for (int w = 0; w < local_; ++w)
      for (size_t j = 0; j < ag.size(); ++j) all[size_t(w)][j] = &st.msgs[size_t(w)][ag[j]];
  } else {
    std::vector<uint8_t> blob;
    ByteWriter bw(blob);
    for (int w = 0; w < local_; ++w)
      for (size_t p : ag) {
        bw.varint(st.msgs[size_t(w)][p].bytes.size());
        bw.raw(st.msgs[size_t(w)][p].bytes.data(), st.msgs[size_t(w)][p].bytes.size());
      }
    auto tc = Clock::now();
    auto blobs = comm_->allgatherv(blob);
    st.comm_s += since(tc);
    remote.resize(size_t(world_), std::vector<Message>(ag.size()));
    for (size_t r = 0; r < blobs.size(); ++r) {
      ByteReader br(blobs[r].data(), blobs[r].size(), "allgathered gradient bundle from rank " + std::to_string(r));
      for (int w = 0; w < local_; ++w)
        for (size_t j = 0; j < ag.size(); ++j) {
          size_t g = r * size_t(local_) + size_t(w);
          uint64_t len = br.varint();
          if (len > br.remaining()) br.fail("message length exceeds the bundle");
          const uint8_t* b = br.take(size_t(len));
          remote[g][j].bytes.assign(b, b + len);
          remote[g][j].wire_bits = 8 * len;
          all[g][j] = &remote[g][j];
        }
      br.expect_end();
    }
  }
  auto t = Clock::now();
  auto agg_one = [&](size_t j) {
    const size_t p = ag[j];
    std::vector<const Message*> m(static_cast<size_t>(world_));
    for (int g = 0; g < world_; ++g) m[size_t(g)] = all[size_t(g)][j];
    slots_[p]->c[0]->aggregate(m, st.result.data() + st.off[p], slots_[p]->n);
  };
  if (opts_.parallel)
    tbb::parallel_for(size_t(0), ag.size(), agg_one);
  else
    for (size_t j = 0; j < ag.size(); ++j) agg_one(j);
  st.decode_s += since(t);
}

// Multi-round compressors (PowerSGD: P, then Q): each round's payloads summed in worker order, one allreduce over
// the ranks for all such tensors, finish_round on the sum; after the last round every worker finishes its own
// state (error feedback, warm start) and worker 0's reconstruction is the result.
void GradientExchange::run_rounds(Step& st) {
  std::vector<size_t> rs;
  if (!st.psgd_dense)
    for (size_t p = 0; p < slots_.size(); ++p)
      if (slots_[p]->mode == Mode::rounds) rs.push_back(p);
  if (rs.empty()) return;
  const int rounds = slots_[rs[0]]->c[0]->rounds();
  for (size_t p : rs)
    FRUGAL_CHECK(slots_[p]->c[0]->rounds() == rounds, "exchange: multi-round compressors disagree on rounds");
  // sums[j][r]: round r's sum over all workers for slot rs[j]
  std::vector<std::vector<std::vector<float>>> sums(rs.size(), std::vector<std::vector<float>>(size_t(rounds)));
  const size_t rt = size_t(local_) * rs.size();
  auto each_task = [&](auto&& fn) {
    if (opts_.parallel)
      tbb::parallel_for(size_t(0), rt, fn);
    else
      for (size_t i = 0; i < rt; ++i) fn(i);
  };
  for (int r = 0; r < rounds; ++r) {
    auto t = Clock::now();
    if (r > 0)  // every worker's payload of this round, from the previous round's sum
      each_task([&](size_t task) {
        const size_t w = task / rs.size(), j = task % rs.size();
        Compressor& c = *slots_[rs[j]]->c[w];
        st.pbuf[w][rs[j]].resize(c.round_len(r));
        c.round_payload(r, st.grads[w][rs[j]], sums[j][size_t(r - 1)].data(), st.pbuf[w][rs[j]].data());
      });
    std::vector<size_t> roff(rs.size());
    size_t len = 0;
    for (size_t j = 0; j < rs.size(); ++j) {
      roff[j] = len;
      len += st.pbuf[0][rs[j]].size();
    }
    std::vector<float> flat(len);
    for (size_t j = 0; j < rs.size(); ++j) {
      float* d = flat.data() + roff[j];
      const size_t p = rs[j];
      std::memcpy(d, st.pbuf[0][p].data(), 4 * st.pbuf[0][p].size());
      for (int w = 1; w < local_; ++w)
        for (size_t i = 0; i < st.pbuf[size_t(w)][p].size(); ++i) d[i] += st.pbuf[size_t(w)][p][i];
    }
    st.encode_s += since(t);
    if (comm_) {
      auto tc = Clock::now();
      comm_->allreduce_sum(flat.data(), len);
      st.comm_s += since(tc);
    }
    t = Clock::now();
    for (size_t j = 0; j < rs.size(); ++j) {
      float* d = flat.data() + roff[j];
      slots_[rs[j]]->c[0]->finish_round(r, d);
      sums[j][size_t(r)].assign(d, d + st.pbuf[0][rs[j]].size());
    }
    st.encode_s += since(t);
  }
  auto t = Clock::now();
  each_task([&](size_t task) {
    const size_t w = task / rs.size(), j = task % rs.size();
    const size_t p = rs[j];
    std::vector<const float*> s(static_cast<size_t>(rounds));
    for (int r = 0; r < rounds; ++r) s[size_t(r)] = sums[j][size_t(r)].data();
    float* dst = w == 0 ? st.result.data() + st.off[p] : st.grads[w][p];
    slots_[p]->c[w]->finish(s, world_, dst);
  });
  st.decode_s += since(t);
}

// dgc runs: dense tensors get the optimizer's momentum here (the optimizer applies momentum to weight decay
// only): buf = m buf + g; heavy ball sends buf, Nesterov g + m buf (PyTorch's SGD).
void GradientExchange::apply_dense_momentum(Step& st) {
  for (size_t p = 0; p < slots_.size(); ++p) {
    Slot& s = *slots_[p];
    if (s.velocity.empty()) continue;
    float* r = st.result.data() + st.off[p];
    for (size_t i = 0; i < s.n; ++i) {
      s.velocity[i] = momentum_ * s.velocity[i] + r[i];
      r[i] = nesterov_ ? r[i] + momentum_ * s.velocity[i] : s.velocity[i];
    }
    if (st.info.capture_reference) std::memcpy(st.ref.data() + st.off[p], r, 4 * s.n);  // exchanged exactly: its own reference
  }
}

void GradientExchange::record_stats(const Step& st, double handed) {
  double err = 0, cos = 0;
  if (st.info.capture_reference) {
    double dd = 0, rr = 0, dr = 0;
    for (size_t i = 0; i < st.total_n; ++i) {
      double a = st.result[i], b = st.ref[i];
      dd += (a - b) * (a - b);
      rr += b * b;
      dr += a * b;
    }
    double aa = 0;
    for (size_t i = 0; i < st.total_n; ++i) aa += double(st.result[i]) * st.result[i];
    err = rr > 0 ? std::sqrt(dd / rr) : 0;
    cos = (aa > 0 && rr > 0) ? dr / std::sqrt(aa * rr) : 1;
  }
  for (ExchangeCounters* c : {&period_, &total_}) {
    c->steps += 1;
    c->bytes_allreduce += st.b_ar / local_;
    c->bytes_allgather += st.b_ag / local_;
    c->bytes_sent += (st.b_ar + st.b_ag) / local_;
    c->bytes_encoded += st.b_enc / local_;
    c->bytes_handed_to_comm += handed / local_;
    c->bytes_dense_fp32 += 4.0 * double(st.total_n);
    c->encode_s += st.encode_s;
    c->decode_s += st.decode_s;
    c->comm_s += st.comm_s;
    if (st.info.capture_reference) {
      c->error_samples += 1;
      c->rel_l2_err_sum += err;
      c->cosine_sum += cos;
    }
  }
}

void GradientExchange::exchange(std::vector<std::vector<float*>>& grads, int64_t step, int epoch) {
  check_gradients(grads, step);
  const size_t P = slots_.size();
  Step st(grads, static_cast<size_t>(local_), P);
  st.psgd_dense = step < powersgd_dense_steps_;
  const bool sampled = opts_.sample_every > 0 && step % opts_.sample_every == 0;
  st.info = StepInfo{step, epoch, momentum_, nesterov_, sampled};
  for (size_t p = 0; p < P; ++p) {
    st.off[p] = st.total_n;
    st.total_n += slots_[p]->n;
  }
  st.result.assign(st.total_n, 0.0f);

  encode_all(st);
  if (sampled) dense_reference(st);
  const double comm_bytes0 = comm_ ? comm_->counters().payload_bytes : 0.0;  // the gradient's collectives from here
  count_bytes(st);
  reduce_summable(st);
  gather_and_aggregate(st);
  run_rounds(st);
  if (handles_momentum_) apply_dense_momentum(st);
  const double handed = comm_ ? comm_->counters().payload_bytes - comm_bytes0 : 0.0;
  for (int w = 0; w < local_; ++w)  // write back to every local worker
    for (size_t p = 0; p < P; ++p) std::memcpy(grads[size_t(w)][p], st.result.data() + st.off[p], 4 * slots_[p]->n);
  record_stats(st, handed);
}

ExchangeStats GradientExchange::take_stats() {
  ExchangeStats s{period_, total_};
  period_ = ExchangeCounters{};
  period_.world = world_;
  period_.pattern = pattern_;
  period_.over_comm = comm_ != nullptr;
  return s;
}

}  // namespace frugal::gradcomp
