// Structured pruning: whole output channels of a conv (hidden units of a linear) are removed together with their
// batch-norm channels and the next layer's input channels, so the pruned model has smaller layers that run at
// their real shapes (fewer MACs, measured faster), and gradient saliency (first-order Taylor, Molchanov et al.,
// ICLR 2017) as a pruning criterion beside magnitude.
//
// A layer is prunable when its output reaches exactly one next conv (groups 1) or linear of the same chain through
// only batch norm, ReLU, pooling, dropout and flatten layers: in a CIFAR ResNet the first conv of every residual
// block; a block's output channels, tied to its shortcut, and the logits are kept.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/transforms.h"
#include "nn/model.h"

namespace frugal::modelcomp {

/// Per prunable layer (by weight name), a score per output channel: the higher, the more it matters.
using ChannelScores = std::map<std::string, std::vector<double>>;
/// Per pruned layer (by weight name), the output channels kept, ascending.
using ChannelKeep = std::map<std::string, std::vector<int>>;

/// The weight names of the prunable layers, in layer order.
std::vector<std::string> prunable_layers(nn::Model& m);

/// Magnitude: the L1 norm of each output channel's weights, times |gamma| / sqrt(var + eps) of a batch norm right
/// after (the L1 norm of the folded filter).
ChannelScores magnitude_channel_scores(nn::Model& m);

/// First-order Taylor saliency of every conv / linear weight: sum over `batches` training batches (in order from
/// image 0, no augmentation) of |w dL/dw|. The model's batch-norm statistics are left as they were.
std::map<std::string, std::vector<float>> taylor_saliency(nn::Model& m, const data::Dataset& train,
                                                          const data::Normalization& norm, int batches,
                                                          int batch_size);

/// Taylor channel scores: each output channel's summed weight saliency (taylor_saliency).
ChannelScores taylor_channel_scores(nn::Model& m, const std::map<std::string, std::vector<float>>& saliency);

/// Keeps the round((1 - fraction) C) highest-scoring channels of each scored layer (at least one).
ChannelKeep select_channels(const ChannelScores& scores, double fraction);

/// A new model with the given layers' channels kept (and everything they feed shrunk to match); the kept
/// channels' computations are unchanged, so before fine-tuning the outputs of every kept channel are identical.
std::unique_ptr<nn::Model> prune_channels(nn::Model& m, const ChannelKeep& keep);

}  // namespace frugal::modelcomp
