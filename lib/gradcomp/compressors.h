// Concrete compressors (built by make_compressor from a spec; see compressor.h for the grammar) and the
// selection kernels they share. Message layout common to all: u8 kind, varint n, then the body below.
#pragma once
#include <memory>
#include <vector>

#include "gradcomp/compressor.h"
#include "gradcomp/wire.h"

namespace frugal::gradcomp {

enum class Kind : uint8_t {
  dense = 1,
  fp16 = 2,
  bf16 = 3,
  sparse = 4,
  randk = 5,
  qsgd = 6,
  qsgd_elias = 7,
  terngrad = 8,
  sign = 9,
  onebit = 10,
  powersgd = 11,
};
void write_header(ByteWriter& w, Kind kind, size_t n);
/// Checks kind and element count; throws on mismatch.
void read_header(ByteReader& r, Kind kind, size_t n);
/// Sparse body: index block, then fp32 values. dst is zeroed, then scattered.
void write_sparse(ByteWriter& w, const uint32_t* idx, const float* vals, size_t k, size_t n);
void read_sparse(ByteReader& r, size_t n, float* dst);
/// dst (n) <- zeros with vals[i] (k fp32, unaligned bytes) at idx[i], later i winning; one pass when idx ascends.
void scatter_into_zeros(const uint32_t* idx, const uint8_t* vals, size_t k, float* dst, size_t n);

// ---- selection kernels

/// The k-th largest (1-based, k clamped to [1, n], n >= 1) of magnitudes m: each +0 or above (not -0), or exactly
/// -1 for NaN (sorted below every number), as |x| with NaN -> -1 gives them. Radix select on the float bits
/// (ordered like the values for such floats).
float kth_largest(const float* m, size_t n, size_t k);
/// Scalar twin: nth_element over a copy.
float kth_largest_ref(const float* m, size_t n, size_t k);

/// Exact top-k by |x| (ties: lower index wins), NaNs never selected. idx <- ascending indices.
/// Fast path: sampled threshold, AVX-512 compress-store candidate scan, nth_element on the candidates.
void topk_select(const float* x, size_t n, size_t k, std::vector<uint32_t>& idx);
/// Scalar twin: full nth_element over all (|x|, index) pairs.
void topk_select_ref(const float* x, size_t n, size_t k, std::vector<uint32_t>& idx);
/// idx <- every i with |x[i]| >= thr (ascending). The fast candidate scan.
void select_at_least(const float* x, size_t n, float thr, std::vector<uint32_t>& idx);
void select_at_least_ref(const float* x, size_t n, float thr, std::vector<uint32_t>& idx);

/// DGC's sampled-threshold selection (Lin et al., ICLR 2018, sec. 3 "hierarchical" top-k; the adaptation
/// loop of the authors' code): sample ~sample_frac of |x| (runs of 16 consecutive elements, one cache line, at a
/// fixed stride from a random start; single elements when the sample is dense), take
/// the ceil(k/n * samples)-th largest as the threshold, select |x| >= thr; while fewer than 0.8k are
/// selected lower the threshold by 0.8 (at most 10 rounds); if more than k, exact top-k among them.
/// Returns between 1 and k ascending indices (fewer than 0.8k only after 10 rounds).
void dgc_select(const float* x, size_t n, size_t k, float sample_frac, Rng& rng, std::vector<uint32_t>& idx,
                int* rounds = nullptr);
void dgc_select_ref(const float* x, size_t n, size_t k, float sample_frac, Rng& rng, std::vector<uint32_t>& idx);
/// DGC's momentum correction fused with its selection: u = fma(m, u, scale g); v += u (Nesterov:
/// u = m (u + scale g); v += u + scale g); then the selection of
/// dgc_select on the updated v, in one pass over memory (the threshold comes from the sample positions'
/// updated values before the pass). Same u, v and indices as the update loop followed by dgc_select.
/// u == nullptr (only with m == 0): no momentum buffer, v += scale g.
void dgc_update_select(const float* g, float scale, float m, bool nesterov, float* u, float* v, size_t n, size_t k,
                       float sample_frac, Rng& rng, std::vector<uint32_t>& idx, std::vector<float>& vals,
                       int* rounds = nullptr);
/// The threshold dgc_update_select starts from (drawing the same sample positions from rng): the k-th largest of
/// the sample's updated |v| (in parallel blocks of the sample's runs), 0 where every element is sent.
float dgc_update_threshold(const float* g, float scale, float m, bool nesterov, const float* u, const float* v,
                           size_t n, size_t k, float sample_frac, Rng& rng);
/// Scalar twin: the sample positions one by one, kth_largest_ref.
float dgc_update_threshold_ref(const float* g, float scale, float m, bool nesterov, const float* u, const float* v,
                               size_t n, size_t k, float sample_frac, Rng& rng);
/// Scalar twin: the update loop, then dgc_select_ref. vals <- v at idx (after the update).
void dgc_update_select_ref(const float* g, float scale, float m, bool nesterov, float* u, float* v, size_t n,
                           size_t k, float sample_frac, Rng& rng, std::vector<uint32_t>& idx,
                           std::vector<float>& vals);

/// The k distinct random indices randk draws for (seed, nonce), ascending. Shared by every worker.
void randk_indices(uint64_t seed, uint64_t nonce, size_t n, size_t k, std::vector<uint32_t>& idx);

/// State helpers: a float vector as u64 count + raw floats; load accepts the expected count (or 0 when
/// allow_empty), so a checkpoint of another shape is rejected.
void put_floats(ByteWriter& w, const std::vector<float>& v);
void get_floats(ByteReader& r, std::vector<float>& v, size_t expected, bool allow_empty = false);

// ---- compressors

/// Error feedback (memory) as a decorator: p = g + e; msg = C(p); e = p - D(msg).
/// Seide et al., Interspeech 2014 (1-bit SGD); Stich et al., NeurIPS 2018; Karimireddy et al., ICML 2019.
class ErrorFeedback final : public Compressor {
 public:
  ErrorFeedback(std::unique_ptr<Compressor> inner, size_t n, std::string name);
  std::string name() const override { return name_; }
  Collective collective() const override { return inner_->collective(); }
  void begin_step(const StepInfo& s) override { inner_->begin_step(s); }
  void encode(const float* grad, size_t n, Message& out) override;
  void decode(const Message& in, float* dst, size_t n) const override { inner_->decode(in, dst, n); }
  SummableBody summable_body(size_t n) const override { return inner_->summable_body(n); }
  void save_state(ByteWriter& w) const override;
  void load_state(ByteReader& r) override;
  void aggregate(std::span<const Message* const> m, float* dst, size_t n) const override {
    inner_->aggregate(m, dst, n);
  }
  const std::vector<float>* residual() const override { return &residual_; }

 private:
  std::unique_ptr<Compressor> inner_;
  std::vector<float> residual_;   // (n)
  std::vector<float> buf_, dec_;  // (n) scratch
  std::string name_;
};

/// Dense fp32 ("none"), IEEE fp16 ("fp16") or bfloat16 ("bf16"), round to nearest even. fp16 overflow
/// becomes inf (gradients beyond 65504 should be scaled first). PyTorch DDP fp16/bf16_compress_hook.
class CastCompressor final : public Compressor {
 public:
  explicit CastCompressor(Kind kind) : kind_(kind) {}
  std::string name() const override;
  Collective collective() const override { return Collective::allreduce; }
  void encode(const float* grad, size_t n, Message& out) override;
  void decode(const Message& in, float* dst, size_t n) const override;
  SummableBody summable_body(size_t n) const override;

 private:
  Kind kind_;
};

/// Exact top-k sparsification (Aji & Heafield, EMNLP 2017; Stich et al., NeurIPS 2018 with memory).
/// Indices as delta-varint or bitmap, fp32 values.
class TopK final : public Compressor {
 public:
  explicit TopK(double ratio) : ratio_(ratio) {}
  std::string name() const override;
  Collective collective() const override { return Collective::allgather; }
  void encode(const float* grad, size_t n, Message& out) override;
  void decode(const Message& in, float* dst, size_t n) const override;

 private:
  double ratio_;
  std::vector<uint32_t> idx_;
  std::vector<float> vals_;
};

/// Random-k with a seed shared by all workers, so only values are sent and payloads can be summed
/// (Stich et al., NeurIPS 2018; BytePS PR #299). Indices depend on (seed, param, nonce) where the nonce
/// (the encode count) travels in the message. scaled: values * n/k, an unbiased estimator.
class RandK final : public Compressor {
 public:
  RandK(double ratio, bool scaled, uint64_t shared_seed) : ratio_(ratio), scaled_(scaled), seed_(shared_seed) {}
  std::string name() const override;
  Collective collective() const override { return Collective::allreduce; }
  void encode(const float* grad, size_t n, Message& out) override;
  void decode(const Message& in, float* dst, size_t n) const override;
  SummableBody summable_body(size_t n) const override;  // the k values

 private:
  double ratio_;
  bool scaled_;
  uint64_t seed_;
  uint64_t nonce_ = 0;
  /// idx_ <- the indices of (seed, nonce) for n and k; the last draw is kept, so decoding the message this
  /// compressor just encoded (every in-process step) does not draw and sort the same indices again.
  void indices_for(uint64_t nonce, size_t n, size_t k) const;
  mutable std::vector<uint32_t> idx_;
  mutable bool idx_valid_ = false;
  mutable uint64_t idx_nonce_ = 0;
  mutable size_t idx_n_ = 0;
};

/// Threshold sparsification: every |g| >= V (Strom, Interspeech 2015; GRACE's ThresholdCompressor sends
/// the values). Empty messages are valid (nothing passed).
class Threshold final : public Compressor {
 public:
  explicit Threshold(float v) : v_(v) {}
  std::string name() const override;
  Collective collective() const override { return Collective::allgather; }
  void encode(const float* grad, size_t n, Message& out) override;
  void decode(const Message& in, float* dst, size_t n) const override;

 private:
  float v_;
  std::vector<uint32_t> idx_;
  std::vector<float> vals_;
};

/// Deep Gradient Compression (Lin, Han, Mao, Wang, Dally; ICLR 2018): momentum correction (u = m u + g;
/// v += u; send top-k of v), local gradient clipping (||g|| <= clip / sqrt(world), sec. 3.2), momentum
/// factor masking (u, v zeroed where sent), density warm-up 25% -> 6.25% -> 1.56% -> 0.4% -> R over the
/// first warmup epochs (density(e) = max(R, 0.25^(e+1)) for e < warmup), sampled-threshold selection.
/// Nesterov momentum as in the authors' code (StepInfo::nesterov). The optimizer must then apply momentum
/// to weight decay only (GradientExchange::handles_momentum(), OptimizerOptions::momentum_decay_only).
class Dgc final : public Compressor {
 public:
  struct Options {
    double ratio = 0.001;
    float sample_frac = 0.01f;
    float clip = 0.0f;  // 0: off
    bool masking = true;
    int warmup_epochs = 0;
  };
  Dgc(const Options& o, size_t n, int world, uint64_t seed);
  std::string name() const override;
  Collective collective() const override { return Collective::allgather; }
  void begin_step(const StepInfo& s) override;
  void encode(const float* grad, size_t n, Message& out) override;
  void decode(const Message& in, float* dst, size_t n) const override;
  bool applies_momentum() const override { return true; }
  /// The increment encode() added to the accumulator v: u (heavy ball) or g + m u (Nesterov), clipped.
  const float* dense_reference(const float* grad) const override { return capture_ ? ref_.data() : grad; }
  void save_state(ByteWriter& w) const override;
  void load_state(ByteReader& r) override;
  double density() const { return density_; }
  const std::vector<float>* residual() const override { return &v_; }

 private:
  Options o_;
  int world_;
  Rng rng_;
  float momentum_ = 0.9f;
  bool nesterov_ = false;
  double density_;
  std::vector<float> u_, v_;  // (n) momentum and accumulated velocity; u_ is kept only while momentum > 0
  bool u_live_ = false;       // u_ holds the momentum of the previous step
  bool capture_ = false;      // this step keeps its increment in ref_
  std::vector<float> ref_;    // (n) dense_reference of the captured step
  std::vector<uint32_t> idx_;
  std::vector<float> vals_;
};

/// QSGD (Alistarh, Grubic, Li, Tomioka, Vojnovic; NeurIPS 2017): l_i = floor(|g_i|/||g|| * s + u),
/// u ~ U[0,1) (unbiased). Body: f32 norm, then per element (level << 1 | sign) in ceil(log2(s+1))+1
/// bits, or with :elias Elias-gamma(level+1) followed by a sign bit when level > 0.
class Qsgd final : public Compressor {
 public:
  Qsgd(int levels, bool elias, uint64_t seed) : s_(levels), elias_(elias), rng_(seed) {}
  std::string name() const override;
  Collective collective() const override { return Collective::allgather; }
  void encode(const float* grad, size_t n, Message& out) override;
  void decode(const Message& in, float* dst, size_t n) const override;
  void save_state(ByteWriter& w) const override { rng_.save(w); }
  void load_state(ByteReader& r) override { rng_.load(r); }

 private:
  int s_;
  bool elias_;
  Rng rng_;
  std::vector<uint32_t> codes_;
};

/// TernGrad (Wen, Xu, Yan, Wu, Wang, Chen, Li; NeurIPS 2017): clip at clip*sigma, s = max|g|,
/// b_i ~ Bernoulli(|g_i|/s), value s*sign*b. Body: f32 s, 2-bit codes (0 zero, 1 plus, 2 minus).
class TernGrad final : public Compressor {
 public:
  TernGrad(float clip, uint64_t seed) : clip_(clip), rng_(seed) {}
  std::string name() const override;
  Collective collective() const override { return Collective::allgather; }
  void encode(const float* grad, size_t n, Message& out) override;
  void decode(const Message& in, float* dst, size_t n) const override;
  void save_state(ByteWriter& w) const override { rng_.save(w); }
  void load_state(ByteReader& r) override { rng_.load(r); }

 private:
  float clip_;
  Rng rng_;
  std::vector<uint32_t> codes_;
};

/// Sign compression. Body: f32 scale, sign bits (1 = negative). decode = scale * sign.
///  signsgd: scale = mean|g|; aggregate = majority vote (Bernstein, Wang, Azizzadenesheli, Anandkumar;
///           ICML 2018): sign(sum_w sign_w) * mean_w(scale_w), ties give 0.
///  efsign:  scale = ||p||_1 / n of the error-compensated p (Karimireddy, Rebjock, Stich, Jaggi; ICML
///           2019, EF-SignSGD); aggregate = mean. Wrapped in ErrorFeedback by the factory.
class SignCompressor final : public Compressor {
 public:
  explicit SignCompressor(bool majority_vote) : vote_(majority_vote) {}
  std::string name() const override { return vote_ ? "signsgd" : "efsign"; }
  Collective collective() const override { return Collective::allgather; }
  void encode(const float* grad, size_t n, Message& out) override;
  void decode(const Message& in, float* dst, size_t n) const override;
  void aggregate(std::span<const Message* const> m, float* dst, size_t n) const override;

 private:
  bool vote_;
};

/// 1-bit SGD (Seide, Fu, Droppo, Li, Yu; Interspeech 2014): 1 bit per value, reconstructed as the mean
/// of the non-negative values or the mean of the negative values (per tensor). Body: f32 mean_pos,
/// f32 mean_neg, sign bits. Wrapped in ErrorFeedback by the factory (the method is defined with it).
class OneBit final : public Compressor {
 public:
  std::string name() const override { return "onebit"; }
  Collective collective() const override { return Collective::allgather; }
  void encode(const float* grad, size_t n, Message& out) override;
  void decode(const Message& in, float* dst, size_t n) const override;
};

/// Adaptive top-k: frugal's own rule, in the spirit of AdaComp (Chen et al., AAAI 2018), which adapts the
/// per-layer selection to the layer's gradient: each step the density is the smallest fraction of the
/// (error-compensated) gradient's entries holding `energy` of its squared L2 mass, estimated from a 1%
/// sample, clamped to [R/8, 8R]. Concentrated layers send fewer entries, flat ones more; R is the target.
class AdaptiveTopK final : public Compressor {
 public:
  AdaptiveTopK(double ratio, double energy, uint64_t seed) : ratio_(ratio), energy_(energy), rng_(seed) {}
  std::string name() const override;
  Collective collective() const override { return Collective::allgather; }
  void encode(const float* grad, size_t n, Message& out) override;
  void decode(const Message& in, float* dst, size_t n) const override;
  void save_state(ByteWriter& w) const override { rng_.save(w); }
  void load_state(ByteReader& r) override { rng_.load(r); }
  double last_density() const { return last_density_; }

 private:
  double ratio_, energy_;
  Rng rng_;
  double last_density_ = 0;
  std::vector<uint32_t> idx_;
  std::vector<float> vals_;
};

/// Gram-Schmidt on the r columns of p (rows, r), row-major, as in the PowerSGD reference code
/// (column /= norm + 1e-8).
void orthogonalize(float* p, size_t rows, int r);

/// PowerSGD (Vogels, Karimireddy, Jaggi; NeurIPS 2019), Algorithm 1: M = grad + e viewed as (rows, cols)
/// = (shape[0], numel/shape[0]); P = M Q; allreduce P; orthogonalize P (Gram-Schmidt); Q = M^T P;
/// allreduce Q; Q /= world (kept as the warm start); out = P Q^T; e = M - out. Q starts as N(0,1) from
/// the shared seed, so all workers agree. 1-D tensors are not accepted (the exchange keeps them dense).
/// The exchange drives the three-phase protocol; encode/decode are the single-worker version (world 1,
/// body: f32 P (rows, r) then f32 Q (cols, r)) used by benchmarks and golden tests.
class PowerSgd final : public Compressor {
 public:
  PowerSgd(int rank, const std::vector<int64_t>& shape, uint64_t shared_seed, int64_t dense_steps = 0);
  std::string name() const override;
  Collective collective() const override { return Collective::allreduce; }
  void encode(const float* grad, size_t n, Message& out) override;
  void decode(const Message& in, float* dst, size_t n) const override;
  void save_state(ByteWriter& w) const override;
  void load_state(ByteReader& r) override;
  const std::vector<float>* residual() const override { return &mem_; }

  size_t rows() const { return rows_; }
  size_t cols() const { return cols_; }
  int rank() const { return r_; }
  bool needs_matrix() const override { return true; }
  /// Steps (from the start of training) that exchange the dense gradient instead (spec :warmup=STEPS).
  int64_t dense_steps() const override { return dense_steps_; }
  /// Round 0: P = M Q (rows, r), M = grad + e; finish_round(0) orthogonalizes the sum of P; round 1:
  /// Q = M^T P_orth (r, cols); finish: Q = Q_sum / world (the warm start), dst = P_orth Q^T, e = M - dst.
  int rounds() const override { return 2; }
  size_t round_len(int r) const override { return r == 0 ? p_len() : q_len(); }
  void round_payload(int r, const float* grad, const float* prev_sum, float* out) override {
    if (r == 0)
      compute_p(grad, out);
    else
      compute_q(prev_sum, out);
  }
  void finish_round(int r, float* sum) const override {
    if (r == 0) orthogonalize(sum, rows_, r_);
  }
  void finish(std::span<const float* const> sums, int world, float* dst) override { finish(sums[0], sums[1], world, dst); }
  size_t p_len() const { return rows_ * size_t(r_); }
  size_t q_len() const { return cols_ * size_t(r_); }
  /// Phase 1: M = grad + e; p (rows, r) = M Q.
  void compute_p(const float* grad, float* p);
  /// Phase 2: p is the sum over workers, already orthogonalized (orthogonalize()); q (r, cols) = (M^T p)^T.
  void compute_q(const float* p, float* q);
  /// Phase 3: q_sum (sum over workers); Q = q_sum / world; dst (rows*cols) = P Q^T (dst null: not kept);
  /// e = M - P Q^T.
  void finish(const float* p_orth, const float* q_sum, int world, float* dst);

 private:
  int r_;
  size_t rows_, cols_;
  int64_t dense_steps_ = 0;
  std::vector<float> q_;    // (cols, r) warm-started query
  std::vector<float> m_;    // (rows, cols) error-compensated gradient of this step
  std::vector<float> mem_;  // (rows, cols) error feedback
  std::vector<float> p_;    // (rows, r) scratch for encode
};


}  // namespace frugal::gradcomp
