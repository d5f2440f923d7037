// A compression recipe: a list of stage spec strings that `frugal compress` runs in order on one model
// (config key "stages", or --stages A,B,C). Each stage works on the model the previous ones left.
//
//   channels:CRITERION:FRACTION   structured pruning (channel_prune.h): remove FRACTION in [0, 1) of the output
//                                 channels of every prunable conv / hidden linear; CRITERION magnitude | taylor.
//   lowrank:ENERGY                truncated SVD of each large enough conv / linear into two smaller layers, the rank
//                                 per layer the smallest that keeps ENERGY in (0, 1] of its squared singular values;
//                                 a k x k conv becomes k x k -> r then 1 x 1 (recipe key lowrank_conv_split kxk_1x1,
//                                 the default) or k x 1 -> r then 1 x k (kx1_1xk, lowrank_model.h).
//   prune:CRITERION:AMOUNT        unstructured pruning of every compressible weight tensor (rank 2 or 4, at least
//                                 min_numel elements): magnitude (each tensor to AMOUNT), global (one magnitude
//                                 threshold over all of them together), taylor (first-order Taylor saliency |w dL/dw|
//                                 summed over saliency_batches training batches, per tensor). AMOUNT: the fraction
//                                 of zeros in [0, 1), or @FILE: per-tensor sparsities from a targets file (frugal
//                                 compress --sensitivity prune --budget PP writes one); tensors it does not name stay
//                                 dense.
//   gradual:AMOUNT:EPOCHS[:LR]    Zhu & Gupta (2017) gradual magnitude pruning while training EPOCHS epochs: each
//                                 tensor's sparsity rises from 0 to AMOUNT (fraction or @FILE) along the cubic schedule
//                                 over the first 3/4 of the steps, masks recomputed every prune_every steps; peak
//                                 learning rate LR (default finetune_lr), cosine schedule.
//   finetune:EPOCHS[:LR]          train EPOCHS epochs under everything so far: pruned weights stay 0, shared weights
//                                 stay shared (each cluster moves by its members' mean update), the structure as
//                                 pruned. Peak learning rate LR (default: config key finetune_lr), cosine schedule.
//   share:BITS[:CONV_BITS]        weight sharing: 1-D k-means (linear initialization) of each compressible tensor's
//                                 kept weights into 2^bits - 1 shared values (plus the zero of pruned weights); BITS
//                                 for every tensor, or for linear ones when CONV_BITS (for convs) is given; [1, 16].
//                                 BITS may be @FILE: per-tensor bits from a targets file (tensors it omits unshared).
//   huffman                       the final encoding: relative sparse indices and shared-value indices coded with
//                                 canonical Huffman codes (packed.h). Implicit at the end of a recipe without int8.
//   int8                          int8 deployment (deploy_net.h): batch norm folded, per-channel int8 weights,
//                                 calibrated activation scales; the last stage, not after prune / gradual / share.
//
// Order: structural stages (channels, lowrank) come before prune / gradual / share (their masks name the final
// tensors); share after any pruning; huffman and int8 last. parse_stages refuses anything else, naming the stage.
#pragma once
#include <string>
#include <vector>

namespace frugal::modelcomp {

enum class StageKind { channels, lowrank, prune, gradual, finetune, share, huffman, int8 };
const char* stage_kind_name(StageKind k);

struct Stage {
  StageKind kind = StageKind::huffman;
  std::string spec;          ///< as written
  std::string criterion;     ///< channels / prune: magnitude | global | taylor
  double amount = 0;         ///< channels fraction, lowrank energy, prune / gradual sparsity
  std::string targets_file;  ///< prune / gradual / share: @FILE (per-tensor values) instead of one amount / bits
  int epochs = 0;            ///< finetune, gradual
  double lr = 0;             ///< finetune / gradual: 0 = the config's finetune_lr
  int bits = 0;              ///< share: every tensor, or linear ones when conv_bits > 0
  int conv_bits = 0;         ///< share: conv tensors (0 = same as bits)
};

/// Parses one stage spec string (see the table above); errors name the spec and say what is allowed.
Stage parse_stage(const std::string& spec);

/// Parses a recipe and checks its order; appends the implicit huffman to a recipe that ends without huffman / int8.
std::vector<Stage> parse_stages(const std::vector<std::string>& specs);

/// "prune:magnitude:0.9,finetune:2" -> its stage strings (split at commas, blanks trimmed).
std::vector<std::string> split_stage_list(const std::string& list);

}  // namespace frugal::modelcomp
