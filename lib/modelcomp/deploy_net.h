// Deployment nets: a trained model compiled into one fused oneDNN inference graph, in f32 or int8.
//
//   1. fold_batchnorm: every batch norm directly after a conv is folded into that conv (per-output-channel weight
//      scale gamma / sqrt(var + eps) and a bias), giving a model without those batch norms.
//   2. f32 (DeployNet::fused_f32, install_fused_f32): the folded model's weights as they are, each ReLU fused into
//      the conv / inner product before it, and a residual block's add + ReLU fused into its last conv as a sum
//      post-op. The same function as the layer-by-layer model up to float rounding; what `frugal evaluate` and the
//      speed measurements of `frugal compress` run for an fp32 model (the batch norms, ReLUs and adds of the layer
//      path take about 40 % of resnet20's inference time).
//   3. int8: quantize_int8 calibrates activation ranges by fp32 forwards of the folded model on calibration images
//      (the maximum at every activation the net materializes) and quantizes the weights symmetric per output
//      channel; DeployNet runs u8 activations after ReLUs, s8 elsewhere (the input image), s8 weights, with the
//      same fusions as f32, max / average pooling on the codes, and logits in f32. oneDNN's int8 convolution and
//      inner product run it (VNNI's vpdpbusd where the CPU has it; DeployNet::implementations() names the kernels).
// Supported layers: conv (+bn) (+relu), linear (+relu), max / avg pool, gap, flatten, dropout (identity),
// residual blocks whose main path ends in a conv and whose shortcut is the identity or option A.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "modelcomp/packed.h"
#include "nn/model.h"
#include "nn/model_io.h"

namespace frugal::modelcomp {

/// A copy of `m` (spec and tensors) with every batch norm that directly follows a conv folded into it (the conv
/// gains a bias); the folded model computes the same function in inference mode.
std::unique_ptr<nn::Model> fold_batchnorm(nn::Model& m);

/// Calibrates the activation scales of the folded model `folded` on `calib` (normalized NHWC batches, at least
/// one) and quantizes every conv / linear weight to s8 per output channel: one int8 record per weight tensor, in
/// the model's layer order.
std::vector<PackedTensor> quantize_int8(nn::Model& folded, const std::vector<Tensor>& calib);

struct DeployOp;

/// How a DeployNet picks oneDNN's implementation of each convolution.
///   first:   oneDNN's first choice for the descriptor, the same in every process (the default).
///   pairs:   as first, and every stride-1 f32 conv with at most 8 output channels runs in its column-pair form
///            (deploy_net.cpp can_pair_columns), which AVX-512 kernels run faster than the 8-channel conv they
///            pad to 16 (resnet20's pruned 16 -> 8 convs; results/compress/r20_speed). Deterministic.
///   fastest: every non-reference implementation, and the column-pair form where it applies, is timed on scratch
///            buffers once per conv geometry and process (nn::fastest_impl), and the quickest replaces the first
///            when it is at least 10 % faster (on AMD Zen 5 at batch 256, jit:avx512_core often beats brgconv, the
///            first choice, on resnet20's pruned and 8x8 convs). Implementations sum in different orders, so
///            outputs can differ in their last bits between processes, and a rare argmax with them; accuracy runs
///            that must repeat exactly use first or pairs.
enum class ConvChoice { first, pairs, fastest };
/// "first" | "pairs" | "fastest"; throws frugal::Error naming `where` (e.g. "--conv-impl") otherwise.
ConvChoice parse_conv_choice(const std::string& s, const std::string& where);

/// Batch-1 inputs: whether the net runs on a team of two threads, each conv as two one-thread convs over the top
/// and bottom bands of its output rows (one per thread), the team meeting at a spin barrier after each step,
/// instead of oneDNN splitting each primitive over its threads. It saves the OpenMP fork / join of every
/// primitive, which at batch 1 costs about as much as a channel-pruned conv's own work on a small machine
/// (results/compress/README.md, "Batch 1 on two threads"). Each band is a whole conv of its rows, so outputs can
/// differ from the unbanded net's in their last bits.
///   off:   never.
///   timed: under ConvChoice::fastest, on a machine with two or more threads, when the banded net's forward times
///          at least 10 % faster than the plain one (median of 21 alternating runs, once per input shape). The
///          default.
///   on:    always at batch 1 (tests; with a single OpenMP thread one thread runs both bands).
enum class RowBands { off, timed, on };

/// The fused inference net of a folded model: forward only (takes normalized f32 images, gives f32 logits).
/// Primitives are created once per input shape. Install it with Model::set_inference_net.
class DeployNet : public nn::Layer {
 public:
  enum class Precision { f32, int8 };
  /// int8: the records of every conv / linear weight of `folded` (by name); path names the file in errors.
  DeployNet(nn::Model& folded, const std::vector<std::pair<std::string, Int8Weights>>& int8, const std::string& path);
  /// f32: folds `m`'s batch norms into a copy it keeps (later changes to m's weights are not seen). Throws
  /// frugal::Error naming the layer when m has one this net does not support.
  static std::shared_ptr<DeployNet> fused_f32(nn::Model& m);
  ~DeployNet() override;
  Precision precision() const { return precision_; }
  std::string name() const override { return precision_ == Precision::int8 ? "int8-net" : "fused-f32-net"; }
  Dims dst_dims(const Dims& src) const override;
  void forward(const Tensor& src, Tensor& dst, const nn::ForwardContext& ctx) override;
  void backward(const Tensor&, Tensor&, bool) override;
  /// oneDNN's implementations of the primitives of the last input shape run, each once with its count
  /// (e.g. "jit_int8:avx512_core_vnni x3"; a conv run as row bands ends in "(2 row bands)").
  std::vector<std::string> implementations() const;
  /// Takes effect for input shapes not run yet (set it before the first forward).
  void set_conv_choice(ConvChoice c) { conv_choice_ = c; }
  ConvChoice conv_choice() const { return conv_choice_; }
  /// Takes effect for input shapes not run yet.
  void set_row_bands(RowBands r) { row_bands_ = r; }
  /// Whether the first input shape run with batch size `n` runs the row-band team plan (RowBands), and that
  /// plan's implementations as implementations() gives them (empty when no such shape ran).
  bool row_bands_used(int64_t n) const;
  std::vector<std::string> implementations(int64_t n) const;
  /// For results JSON: {"batch1_row_bands": row_bands_used(1), "batch1_implementations": implementations(1)}, or an
  /// empty object when no batch-1 input ran.
  nlohmann::json batch1_report() const;
  struct Plan;  ///< the primitives and buffers of one input shape

 private:
  explicit DeployNet(std::unique_ptr<nn::Model> folded);
  Plan& plan(const Dims& src);
  std::unique_ptr<Plan> build_plan(const Dims& src, bool team);
  const Plan* plan_for_batch(int64_t n) const;
  Precision precision_ = Precision::int8;
  ConvChoice conv_choice_ = ConvChoice::first;
  RowBands row_bands_ = RowBands::timed;
  std::unique_ptr<nn::Model> folded_;  ///< f32: the folded copy the ops point into
  std::vector<std::unique_ptr<DeployOp>> ops_;
  float input_scale_ = 0.f;
  int classes_ = 0;
  std::map<Dims, std::unique_ptr<Plan>> plans_;
  Plan* last_ = nullptr;
};

/// Installs DeployNet::fused_f32(m) as m's inference net and returns ""; or, when m already has an inference net,
/// has approximate / quantized arithmetic attached, or has a layer the fused net does not support, leaves m
/// running layer by layer and returns why.
std::string install_fused_f32(nn::Model& m);

/// Which path `m`'s forward runs: "int8", "fused-f32" or "layers".
std::string inference_path(const nn::Model& m);

namespace detail {
/// Tests: row-band convs of plans built from now on take oneDNN's first implementation whose name contains `name`
/// (oneDNN's first choice where none does) instead of the ConvChoice's; "" restores the normal choice.
void force_band_impl(const std::string& name);
}  // namespace detail

/// Reads any model file (frugal's model.bin, a checkpoint's model, a packed model); a packed model with int8
/// records comes back with its DeployNet installed (Model::inference_net).
nn::LoadedModel load_model_file(const std::string& path);

}  // namespace frugal::modelcomp
