// Gradient compressors: lossy codecs for ONE gradient tensor of ONE worker. One instance per parameter
// per worker, so error-feedback residuals, DGC momentum and PowerSGD's warm-started Q live inside it.
//
// Spec grammar (the same strings appear in CLI flags, experiments/*.json and result names):
//   spec   := [ "ef:" ] body [ "+ef" | "+noef" ]
//   body   := name { ":" arg }
//   arg    := number | key "=" value | flag
//   none | fp16 | bf16                     dense fp32 / half / bfloat16 (allreduce)
//   topk:R          exact top-k, k = ceil(R n)                       (allgather, EF on by default)
//   randk:R         random-k with a seed shared by all workers       (allreduce; unbiased n/k scaling
//                   without EF, unscaled Stich-style with +ef)
//   threshold:V     every |g| >= V                                   (allgather, EF on by default)
//   dgc:R[:sample=0.01][:clip=C][:nomask][:warmup=E]                  (allgather, momentum correction)
//   qsgd:S[:elias]  S levels, stochastic rounding                    (allgather, unbiased, no EF)
//   terngrad[:clip=2.5]                                              (allgather, unbiased w/o clip)
//   signsgd         1 bit + mean|g|, majority vote                   (allgather, no EF)
//   efsign          scaled sign with error feedback                  (allgather, EF always)
//   onebit          1 bit + two means with error feedback            (allgather, EF always)
//   powersgd:RANK[:warmup=STEPS]  low-rank P Q^T, warm start, EF  (allreduce, two rounds; the first STEPS
//                   steps exchange the dense gradient, as PyTorch's start_powerSGD_iter)
//   adaptive:R[:energy=0.5]  per-tensor density from gradient statistics, see AdaptiveTopK (allgather, EF)
// "+ef" / "ef:" force error feedback on, "+noef" forces it off (where the method allows a choice).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace frugal::gradcomp {

class ByteWriter;
class ByteReader;

/// The bits that would cross the network for one tensor of one worker. bytes is what decode reads;
/// wire_bits == 8 * bytes.size().
struct Message {
  std::vector<uint8_t> bytes;
  uint64_t wire_bits = 0;
};

/// How the payloads of all workers are combined.
enum class Collective {
  allreduce,  ///< decoded payloads can be summed element-wise (dense, fp16/bf16, shared-seed randk, PowerSGD)
  allgather,  ///< every worker needs every message (indices or per-worker scales): allgatherv
};
const char* collective_name(Collective c);

/// Everything a compressor needs to know at construction.
struct CompressorContext {
  std::vector<int64_t> shape;          ///< parameter shape, e.g. (OC, IC, KH, KW), (OUT, IN) or (C)
  uint64_t seed = 0;                   ///< run seed; shared randomness derives from (seed, param_index) only
  int param_index = 0;                 ///< which parameter tensor this is (shared-seed streams differ per tensor)
  int worker = 0;                      ///< global worker id (private randomness: stochastic rounding)
  int world = 1;                       ///< total number of workers
  bool error_feedback_default = true;  ///< EF for methods where it is optional (topk, threshold, adaptive)
  int warmup_epochs = 0;               ///< DGC density warm-up epochs
};

/// Passed to every compressor before each step's encode.
struct StepInfo {
  int64_t step = 0;
  int epoch = 0;
  float momentum = 0.9f;           ///< optimizer momentum (DGC's momentum correction)
  bool nesterov = false;           ///< Nesterov momentum (DGC's momentum correction)
  bool capture_reference = false;  ///< keep this step's dense_reference() (sampled error steps)
};

/// Element type of the summable body of an allreduce message.
enum class SumType : uint8_t { f32, f16, bf16 };
/// The summable body of an allreduce message: its last `count` elements of `type`. Everything before it
/// (kind, size, a shared-seed nonce) is the same on every worker, so only the body crosses the network and
/// the workers' bodies are added element-wise (f16 / bf16: each addition rounded to the 16-bit type); the
/// header followed by the summed body decodes to the sum of the workers' decodes.
struct SummableBody {
  size_t count = 0;
  SumType type = SumType::f32;
  size_t bytes() const { return count * (type == SumType::f32 ? 4 : 2); }
};

/// Lossy codec for one gradient tensor.
class Compressor {
 public:
  virtual ~Compressor() = default;
  /// The canonical spec that rebuilds this compressor, e.g. "dgc:0.001".
  virtual std::string name() const = 0;
  virtual Collective collective() const = 0;
  /// Called once per step before encode (epoch-dependent schedules, momentum).
  virtual void begin_step(const StepInfo&) {}
  /// grad: (n) floats, n == numel of the context shape. May update internal state (residual, momentum).
  /// out is overwritten.
  virtual void encode(const float* grad, size_t n, Message& out) = 0;
  /// dst: (n) floats, overwritten with this one message's reconstruction. Throws frugal::Error on any
  /// malformed or truncated message; never reads outside in.bytes.
  virtual void decode(const Message& in, float* dst, size_t n) const = 0;
  /// dst (n) <- the aggregate of all workers' messages, in global worker order: by default the mean of
  /// the decoded messages, summed in that order. signsgd overrides it with a majority vote.
  virtual void aggregate(std::span<const Message* const> msgs, float* dst, size_t n) const;
  /// Allreduce compressors: where the summable body of a message for a tensor of n elements lies. The default
  /// throws (allgather compressors have none).
  virtual SummableBody summable_body(size_t n) const;
  /// The dense quantity this step's message approximates, for the sampled reconstruction error: `grad` itself
  /// for most compressors; DGC's momentum-corrected increment of its accumulator (what dense momentum SGD
  /// would apply). Valid after encode() of a step begun with StepInfo::capture_reference.
  virtual const float* dense_reference(const float* grad) const { return grad; }
  /// Properties of the built compressor (the exchange asks the object, never its spec string):
  /// applies the optimizer's momentum itself (dgc's momentum correction; the optimizer then keeps momentum
  /// for the weight decay only), and cannot compress 1-D tensors (powersgd).
  virtual bool applies_momentum() const { return false; }
  virtual bool needs_matrix() const { return false; }
  /// Steps (from the start of training) in which the exchange sends this tensor dense instead (powersgd:R:warmup=N).
  virtual int64_t dense_steps() const { return 0; }

  /// Multi-round summable protocols (PowerSGD: P, then Q). rounds() == 0: the single-message encode/decode above.
  /// Round r: every worker writes round_payload(r, ...) (round_len(r) floats); the exchange sums them over all
  /// workers (in worker order, then an allreduce over ranks) and calls finish_round(r, sum) once, which may
  /// transform the sum in place the same way on every worker (PowerSGD orthogonalizes P); round r + 1 reads it as
  /// prev_sum. After the last round, finish(sums, world, dst) writes this worker's (n) reconstruction.
  virtual int rounds() const { return 0; }
  virtual size_t round_len(int r) const;
  virtual void round_payload(int r, const float* grad, const float* prev_sum, float* out);
  virtual void finish_round(int r, float* sum) const {}
  virtual void finish(std::span<const float* const> sums, int world, float* dst);

  /// Error-feedback residual, if this compressor keeps one (tests: residual + decoded == input).
  virtual const std::vector<float>* residual() const { return nullptr; }
  /// Everything encode() carries from step to step (residuals, momentum, warm-start factors, random state),
  /// for checkpoints: a resumed run continues exactly. Stateless compressors write nothing.
  virtual void save_state(ByteWriter&) const {}
  /// Reads what save_state wrote; throws frugal::Error (naming the offset) when it does not fit this compressor.
  virtual void load_state(ByteReader&) {}
};

/// Parsed spec: name, positional args, key=value options, flags, EF choice.
struct Spec {
  std::string text;                       // as given
  std::string name;                       // "dgc"
  std::vector<double> args;               // positional numbers
  std::map<std::string, std::string> kv;  // clip=5
  std::vector<std::string> flags;         // elias, nomask
  int ef = -1;                            // -1 default, 0 forced off, 1 forced on
  bool has_flag(const std::string& f) const;
  double number(const std::string& key, double dflt) const;
};
Spec parse_spec(const std::string& text);

/// Builds a compressor from a spec string. Throws frugal::Error naming the bad part and listing the
/// valid specs.
std::unique_ptr<Compressor> make_compressor(const std::string& spec, const CompressorContext& ctx);

/// Collective the spec's payload needs (without building one).
Collective spec_collective(const std::string& spec);

/// Product of the shape, checked for overflow and non-negative extents.
size_t shape_numel(const std::vector<int64_t>& shape);

}  // namespace frugal::gradcomp
