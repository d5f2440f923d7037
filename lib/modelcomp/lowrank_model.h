// Low-rank factorization of a whole model (compress's low-rank mode, a `lowrank:ENERGY` stage): every selected
// linear / conv layer whose weight W (rows, cols) is well approximated by a truncated SVD W ~ A B, A (rows, r) =
// U_r diag(sqrt s), B (r, cols) = diag(sqrt s) V_r^T (lowrank.h), is replaced in the model spec by two layers:
//   linear (OUT, IN)          -> linear IN -> r (weight B, no bias), linear r -> OUT (weight A, the bias)
//   conv (OC, IC, KH, KW)     -> W as the matrix (OC, IC*KH*KW): conv KHxKW IC -> r with the original stride and
//                                padding (weight B as (r, IC, KH, KW), no bias), then conv 1x1 r -> OC (weight A as
//                                (OC, r, 1, 1), the bias)
// A batch norm (or anything else) after the layer stays after the second factor. The result is an ordinary model
// (a spec plus tensors): it trains, saves, packs and evaluates at its real smaller shapes like any other.
// The rank of each layer is the smallest keeping `energy` of sum s^2, capped by max_rank_fraction; a layer is left
// as it is when the factors would not hold fewer weights: r (rows + cols) >= rows cols (the MACs shrink by the same
// factor, since both factors run at the layer's output resolution).
// conv_split = kx1_1xk instead splits a square K x K conv spatially (Jaderberg, Vedaldi & Zisserman, BMVC 2014,
// scheme 2): W as the matrix (IC*K, K*OC), M[c*K + y][x*OC + o] = W[o][c][y][x]; its rank-r factors are a K x 1 conv
// IC -> r (stride and padding along H only) followed by a 1 x K conv r -> OC (stride and padding along W), with the
// bias and anything after the layer after the second. 1 x 1 convs keep the kxk_1x1 form.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nn/model.h"

namespace frugal::modelcomp {

struct LowRankOptions {
  double energy = 0.95;            ///< (0, 1]: each layer keeps the smallest rank with at least this of sum s^2
  double max_rank_fraction = 1.0;  ///< (0, 1]: rank <= max(1, floor(fraction min(rows, cols)))
  int64_t min_numel = 0;           ///< layers with fewer weights than this are left as they are
  std::string layers = "all";      ///< which layers: linear | conv | all
  bool only_if_smaller = true;     ///< leave a layer whose factors would hold as many weights or more (tests of
                                   ///< the full-rank factorization turn this off)
  std::string conv_split = "kxk_1x1";  ///< kxk_1x1 | kx1_1xk (see the header comment)
};

/// What happened to one conv / linear layer of the source model.
struct LowRankLayer {
  std::string name;           ///< the source weight's name, e.g. "1.weight"
  std::string kind;           ///< linear | conv
  std::vector<int64_t> dims;  ///< the source weight's dims
  std::string split;          ///< conv: kxk_1x1 or kx1_1xk; linear: empty
  int rows = 0, cols = 0;     ///< the matrix factorized: (OUT, IN), (OC, IC*KH*KW), or (IC*K, K*OC) for kx1_1xk
  int rank = 0;               ///< rank chosen (0 when not factorized for lack of selection / size)
  int rank_max = 0;           ///< min(rows, cols): the full rank
  double energy_kept = 1.0;   ///< sum of the kept s^2 / sum of all s^2 at `rank`
  bool factorized = false;
  std::string reason;  ///< why not factorized: "not selected", "smaller than min_numel", "grouped conv",
                       ///< "no saving at this rank"; empty when factorized
  int64_t params_before = 0, params_after = 0;  ///< weights and bias of the layer (of both factors after)
  int64_t macs_before = 0, macs_after = 0;      ///< per image
  std::vector<std::string> factor_names;        ///< the factors' weight names in the new model (B's, then A's)
};

struct FactorizedModel {
  std::unique_ptr<nn::Model> model;  ///< the new model: its spec has the factor layers, its tensors are set
  std::vector<LowRankLayer> layers;  ///< every conv / linear of the source, in layer order
};

/// Checks the options (layers one of linear | conv | all, the numbers in range); an error names the bad field.
void check_lowrank_options(const LowRankOptions& o);

/// Factorizes the selected layers of m (m is read, not changed). Before fine-tuning, each factorized layer computes
/// A B x + bias: at energy 1 (full rank) the outputs equal the source model's up to float rounding.
FactorizedModel factorize_model(nn::Model& m, const LowRankOptions& o);

}  // namespace frugal::modelcomp
