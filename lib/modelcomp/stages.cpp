#include "modelcomp/stages.h"

#include <cmath>

#include "util/check.h"
#include "util/spec_string.h"

namespace frugal::modelcomp {

const char* stage_kind_name(StageKind k) {
  switch (k) {
    case StageKind::channels: return "channels";
    case StageKind::lowrank: return "lowrank";
    case StageKind::prune: return "prune";
    case StageKind::gradual: return "gradual";
    case StageKind::finetune: return "finetune";
    case StageKind::share: return "share";
    case StageKind::huffman: return "huffman";
    case StageKind::int8: return "int8";
  }
  return "?";
}

namespace {
const char* kStageHelp =
    "stages are channels:CRITERION:FRACTION, lowrank:ENERGY, prune:CRITERION:AMOUNT, gradual:AMOUNT:EPOCHS[:LR], "
    "finetune:EPOCHS[:LR], share:BITS[:CONV_BITS], huffman, int8 (lib/modelcomp/stages.h)";

double number(const util::SpecFields& f, size_t i, const char* what) {
  double v = 0;
  FRUGAL_CHECK(util::parse_number(f.fields[i], v), "compress stage '", f.text, "': ", what, " '", f.fields[i],
               "' is not a number");
  return v;
}

int whole(const util::SpecFields& f, size_t i, const char* what, int lo, int hi) {
  const double v = number(f, i, what);
  FRUGAL_CHECK(v == std::floor(v) && v >= lo && v <= hi, "compress stage '", f.text, "': ", what, " must be a whole ",
               "number in [", lo, ", ", hi, "], got ", f.fields[i]);
  return int(v);
}

void arity(const util::SpecFields& f, size_t lo, size_t hi, const char* form) {
  FRUGAL_CHECK(f.fields.size() >= lo && f.fields.size() <= hi, "compress stage '", f.text, "': expected ", form);
}

/// A peak learning rate field (> 0).
double learning_rate(const util::SpecFields& f, size_t i) {
  const double lr = number(f, i, "learning rate");
  FRUGAL_CHECK(lr > 0, "compress stage '", f.text, "': learning rate must be positive, got ", f.fields[i]);
  return lr;
}

/// A sparsity (fraction in [0, 1)) or @FILE.
void amount_or_file(const util::SpecFields& f, size_t i, Stage& s) {
  if (f.fields[i][0] == '@') {
    s.targets_file = f.fields[i].substr(1);
    FRUGAL_CHECK(!s.targets_file.empty(), "compress stage '", f.text, "': '@' needs a targets file name after it");
    return;
  }
  s.amount = number(f, i, "sparsity");
  FRUGAL_CHECK(s.amount >= 0 && s.amount < 1, "compress stage '", f.text, "': sparsity must be in [0, 1), got ",
               f.fields[i]);
}
}  // namespace

Stage parse_stage(const std::string& spec) {
  const util::SpecFields f = util::split_spec(spec, "compress stage");
  Stage s;
  s.spec = spec;
  if (f.name == "channels") {
    arity(f, 2, 2, "channels:CRITERION:FRACTION, e.g. channels:taylor:0.5");
    s.kind = StageKind::channels;
    s.criterion = f.fields[0];
    FRUGAL_CHECK(s.criterion == "magnitude" || s.criterion == "taylor", "compress stage '", spec,
                 "': channel criterion must be magnitude or taylor, got '", s.criterion, "'");
    s.amount = number(f, 1, "fraction");
    FRUGAL_CHECK(s.amount > 0 && s.amount < 1, "compress stage '", spec, "': fraction must be in (0, 1), got ",
                 f.fields[1]);
  } else if (f.name == "lowrank") {
    arity(f, 1, 1, "lowrank:ENERGY, e.g. lowrank:0.95");
    s.kind = StageKind::lowrank;
    s.amount = number(f, 0, "energy");
    FRUGAL_CHECK(s.amount > 0 && s.amount <= 1, "compress stage '", spec, "': energy must be in (0, 1], got ",
                 f.fields[0]);
  } else if (f.name == "prune") {
    arity(f, 2, 2, "prune:CRITERION:AMOUNT, e.g. prune:magnitude:0.9 or prune:magnitude:@targets.json");
    s.kind = StageKind::prune;
    s.criterion = f.fields[0];
    FRUGAL_CHECK(s.criterion == "magnitude" || s.criterion == "global" || s.criterion == "taylor",
                 "compress stage '", spec, "': prune criterion must be magnitude, global or taylor, got '",
                 s.criterion, "'");
    amount_or_file(f, 1, s);
    FRUGAL_CHECK(s.criterion != "global" || s.targets_file.empty(), "compress stage '", spec,
                 "': global pruning has one threshold for all tensors, so it takes one sparsity, not a targets file");
  } else if (f.name == "gradual") {
    arity(f, 2, 3, "gradual:AMOUNT:EPOCHS[:LR], e.g. gradual:0.92:6 or gradual:0.92:6:0.05");
    s.kind = StageKind::gradual;
    s.criterion = "magnitude";
    amount_or_file(f, 0, s);
    s.epochs = whole(f, 1, "epochs", 1, 100000);
    if (f.fields.size() == 3) s.lr = learning_rate(f, 2);
  } else if (f.name == "finetune") {
    arity(f, 1, 2, "finetune:EPOCHS[:LR], e.g. finetune:3 or finetune:3:0.005");
    s.kind = StageKind::finetune;
    s.epochs = whole(f, 0, "epochs", 1, 100000);
    if (f.fields.size() == 2) s.lr = learning_rate(f, 1);
  } else if (f.name == "share") {
    arity(f, 1, 2, "share:BITS[:CONV_BITS], e.g. share:5:8 or share:@bits.json");
    s.kind = StageKind::share;
    if (f.fields[0][0] == '@') {
      FRUGAL_CHECK(f.fields.size() == 1, "compress stage '", spec, "': a targets file gives every tensor's bits");
      s.targets_file = f.fields[0].substr(1);
      FRUGAL_CHECK(!s.targets_file.empty(), "compress stage '", spec, "': '@' needs a targets file name after it");
    } else {
      s.bits = whole(f, 0, "bits", 1, 16);
      if (f.fields.size() == 2) s.conv_bits = whole(f, 1, "conv bits", 1, 16);
    }
  } else if (f.name == "huffman") {
    arity(f, 0, 0, "huffman (no fields)");
    s.kind = StageKind::huffman;
  } else if (f.name == "int8") {
    arity(f, 0, 0, "int8 (no fields)");
    s.kind = StageKind::int8;
  } else {
    FRUGAL_FAIL("unknown compress stage '", spec, "': ", kStageHelp);
  }
  return s;
}

std::vector<Stage> parse_stages(const std::vector<std::string>& specs) {
  FRUGAL_CHECK(!specs.empty(), "compress: the recipe has no stages; ", kStageHelp);
  std::vector<Stage> out;
  bool pruned_or_shared = false, shared = false, ended = false;
  for (const std::string& spec : specs) {
    Stage s = parse_stage(spec);
    FRUGAL_CHECK(!ended, "compress stage '", spec, "' comes after '", out.back().spec,
                 "', which must be the last stage");
    switch (s.kind) {
      case StageKind::channels:
      case StageKind::lowrank:
        FRUGAL_CHECK(!pruned_or_shared, "compress stage '", spec, "' changes the model's layers, so it must come ",
                     "before prune / gradual / share (their masks and codebooks name the final tensors)");
        break;
      case StageKind::prune:
      case StageKind::gradual:
        FRUGAL_CHECK(!shared, "compress stage '", spec, "' after share: prune first, then share the kept weights");
        pruned_or_shared = true;
        break;
      case StageKind::share:
        FRUGAL_CHECK(!shared, "compress stage '", spec, "': the weights are already shared");
        pruned_or_shared = shared = true;
        break;
      case StageKind::int8:
        FRUGAL_CHECK(!pruned_or_shared, "compress stage 'int8' after prune / gradual / share: int8 layers are ",
                     "dense (sparse or shared int8 is not supported); use int8 after channels / lowrank / finetune");
        ended = true;
        break;
      case StageKind::huffman:
        ended = true;
        break;
      case StageKind::finetune:
        break;
    }
    out.push_back(std::move(s));
  }
  if (!ended) out.push_back(parse_stage("huffman"));
  return out;
}

std::vector<std::string> split_stage_list(const std::string& list) {
  std::vector<std::string> out;
  for (std::string part : util::split(list, ',')) {
    const size_t b = part.find_first_not_of(" \t"), e = part.find_last_not_of(" \t");
    FRUGAL_CHECK(b != std::string::npos, "compress: empty stage in the list '", list, "'");
    out.push_back(part.substr(b, e - b + 1));
  }
  return out;
}

}  // namespace frugal::modelcomp
