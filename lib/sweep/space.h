// The sweep file of `frugal sweep --config FILE`: a base config, a search space over config keys, a strategy and
// the objectives. Parsed and expanded into trials here, before any trial runs, so a malformed file, an unknown
// key or a value of the wrong type is an error up front.
//
// Sweep file (JSON; keys starting with '_' are comments):
//   {
//     "base": "experiments/mnist_lenet5.json",  // optional: a config file (path as given, else next to this file)
//     "config": {"epochs": 2},                   // optional: config keys over the base (also: --set key=value)
//     "space": {                                 // the swept config keys (any key of `frugal train --keys`):
//       "compressor": ["none", "topk:0.01"],     //   a list: exactly these values
//       "width": {"range": [0.5, 2, 0.5]},       //   range [lo, hi, step]: lo, lo+step, ... up to hi inclusive
//                                                //   (integers when lo, hi and step are all integers)
//       "lr": {"log": [0.01, 0.1], "n": 3}       //   log [lo, hi] with n points spaced evenly in log from lo to hi
//     },                                         //   inclusive (6 significant digits; integer keys rounded)
//     "strategy": "grid",                        // grid (every combination) | random | halving | asha
//     "trials": 8, "seed": 0,                    // random: this many distinct points drawn with this seed (lists
//                                                //   and ranges uniformly over their values, log log-uniformly over
//                                                //   [lo, hi]); halving, asha: the starting set (absent or 0: grid;
//                                                //   asha starts the grid's points in an order shuffled by seed)
//     "halving": {"eta": 3, "min_epochs": 1, "max_epochs": 9},  // halving and asha: the rungs of the `epochs`
//                                                //   budget, min_epochs, eta x that, ... up to max_epochs; the best
//                                                //   1/eta by the first objective go up a rung: halving after the
//                                                //   whole rung (sweep/halving.h), asha as soon as a trial is in the
//                                                //   top 1/eta of its rung's results so far (sweep/asha.h)
//     "objectives": [{"metric": "metrics.val_accuracy", "direction": "maximize"},   // the first one chooses
//                    {"metric": "communication.bytes_sent_per_worker", "direction": "minimize"}],
//     "parallel": 2                              // trials at once (default: cores / (workers x threads))
//   }
// Keys of the space are expanded in alphabetical order (the first key varies slowest in the grid).
//
// Objectives name a number in a trial's results.json by its dotted path (results/SCHEMA.md), or one the sweep
// adds under "sweep." (lib/sweep/trial_metrics.h): sweep.model_file_bytes (size of the trial's model.bin),
// sweep.weight_bytes (parameters at their bit-widths), sweep.energy_uj (arithmetic energy per image,
// lib/approx/energy.h, with the trial's multiplier and bit-widths). Trials are scored on the validation
// split: an objective on a test-split metric (a path with "test_") is rejected, and when the base config holds no
// validation images (val_split 0, or -1 resolving to 0) the sweep sets val_split = 5000 (MNIST, Fashion-MNIST,
// CIFAR) and says so. The test accuracy is reported beside, never used to choose.
//
// The fingerprint of a sweep (what its trials mean: the resolved base config minus threads, progress_s and
// data_dir; the expanded space; strategy, trials, seed, halving) is the first record of its journal; a rerun with
// a different fingerprint is an error naming what changed. Objectives and parallel may change between runs.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/config.h"
#include "sweep/pareto.h"

namespace frugal::sweep {

struct Dimension {
  std::string key;
  std::vector<nlohmann::json> values;  ///< every value a grid visits, typed as the config key expects
  enum class Kind { list, range, log } kind = Kind::list;
  double lo = 0, hi = 0;  ///< log: the interval random sampling draws from
};

struct Objective {
  std::string metric;  ///< dotted path into results.json, or sweep.*
  Direction direction = Direction::maximize;
};

struct Halving {
  int eta = 3;
  int64_t min_epochs = 1, max_epochs = 1;
};

struct SweepSpec {
  std::string file;               ///< the sweep file, for messages
  nlohmann::json base;            ///< the resolved base config (every key)
  std::vector<std::string> notes; ///< what the sweep decided for the user (e.g. the val_split default)
  std::vector<Dimension> space;
  std::string strategy = "grid";  ///< grid | random | halving | asha
  int64_t trials = 0;             ///< random / halving / asha: points to draw (0: the grid)
  uint64_t seed = 0;
  Halving halving;                ///< halving and asha
  std::vector<Objective> objectives;
  int parallel = 0;  ///< 0: automatic
};

/// One run of the trainer: a point of the space (params, in space order) at an epochs budget (-1: the config's).
struct Trial {
  std::string id;          ///< t0003, or t0003-e3 under halving and asha
  size_t point = 0;        ///< index of the point among the sweep's points
  nlohmann::json params;   ///< {key: value} of the swept keys
  int64_t epochs = -1;
  int rung = 0;
};

/// Parses a sweep file's JSON; `sets` are --set key=value overrides of the base config. `file` names the sweep
/// file (for messages and for finding "base" next to it). Throws frugal::Error naming the file and the entry.
SweepSpec parse_sweep(const nlohmann::json& j, const std::string& file, const std::vector<std::string>& sets = {});
SweepSpec load_sweep(const std::string& path, const std::vector<std::string>& sets = {});

/// Parses one space entry (list, range or log) for config key `key`.
Dimension parse_dimension(const std::string& key, const nlohmann::json& v, const std::string& where);

/// The points of the sweep: every combination (grid), or `trials` distinct points drawn with `seed` (random, and
/// halving / asha when trials > 0). asha without trials: every combination in an order shuffled with `seed`, so the
/// first results, which decide the first promotions, are not one corner of the grid. Each point is {key: value}.
std::vector<nlohmann::json> expand_points(const SweepSpec& spec);

/// Every combination of the dimensions' values, the first dimension varying slowest.
std::vector<nlohmann::json> grid_points(const std::vector<Dimension>& space);

/// `n` distinct points drawn with `seed` (fewer when the space has fewer distinct points: then all of them).
std::vector<nlohmann::json> random_points(const std::vector<Dimension>& space, int64_t n, uint64_t seed);

/// The trials of rung 0 (grid / random: the only rung).
std::vector<Trial> first_rung(const SweepSpec& spec, const std::vector<nlohmann::json>& points);

/// A trial's full config: the base, its params, its epochs budget and `threads`.
io::Config trial_config(const SweepSpec& spec, const Trial& t, int threads);

/// What a journal's first record stores: everything that decides what the trials mean.
nlohmann::json fingerprint_of(const SweepSpec& spec);

/// "" when equal, else one line per difference, e.g. "space.bits: [2,4] -> [2,4,8]", "base.lr: 0.05 -> 0.1".
std::string describe_changes(const nlohmann::json& before, const nlohmann::json& now, const std::string& at = "");

/// The value at a dotted path ("metrics.val_accuracy") or nullptr.
const nlohmann::json* at_path(const nlohmann::json& j, const std::string& path);

}  // namespace frugal::sweep
