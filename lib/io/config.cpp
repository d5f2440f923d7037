#include "io/config.h"

#include <fstream>
#include <sstream>

#include "util/check.h"

namespace frugal::io {

using json = nlohmann::json;

const std::vector<KeyInfo>& config_keys() {
  static const std::vector<KeyInfo> keys{
      {"model", "lenet5",
       "preset name (mlp, lenet5, lenet5-caffe, cnn, resnet, resnet20/32/56, vgg) or path to a JSON model spec"},
      {"dataset", "mnist", "mnist | fashion-mnist | cifar10 | cifar100 | folder:PATH"},
      {"data_dir", "", "extra data root searched first (also: env FRUGAL_DATA, roots separated by ':')"},
      {"width", 1.0, "width multiplier of the preset (channels / units)"},
      {"depth", -1, "depth of the preset (-1: its default; resnet: 6n+2 layers)"},
      {"epochs", 10, "training epochs"},
      {"max_steps", -1, "stop after this many optimizer steps (-1: epochs decide); the schedule spans them"},
      {"batch", 128, "global batch size (split evenly across workers)"},
      {"optimizer", "sgd", "sgd | adam | adamw"},
      {"lr", 0.05, "peak learning rate"},
      {"momentum", 0.9, "SGD momentum"},
      {"nesterov", true, "Nesterov momentum (SGD)"},
      {"weight_decay", 5e-4, "L2 weight decay (decoupled for adamw)"},
      {"decay_1d", true,
       "apply weight_decay to 1-D parameters too (biases, batch-norm scale/shift); false: weights only"},
      {"lars", false, "layer-wise trust ratio (LARS, You et al. 2017)"},
      {"lars_eta", 0.001, "LARS trust coefficient"},
      {"schedule", "cosine", "constant | step | cosine | onecycle | plateau"},
      {"warmup_epochs", 0.0, "linear learning-rate warm-up (epochs, fractional allowed)"},
      {"step_epochs", 30.0, "step schedule: epochs between decays"},
      {"gamma", 0.1, "step schedule: decay factor"},
      {"plateau_patience", 2, "plateau schedule: epochs without validation-loss improvement before decaying"},
      {"plateau_factor", 0.5, "plateau schedule: decay factor"},
      {"swa_epochs", 0,
       "stochastic weight averaging (Izmailov et al. 2018): the last swa_epochs epochs run at the constant swa_lr and "
       "their end-of-epoch weights are averaged; batch-norm statistics are then re-estimated on the training set. "
       "The schedule runs over the epochs before and is rescaled to end at swa_lr. 0 = off"},
      {"swa_lr", 0.01, "learning rate of the SWA epochs"},
      {"label_smoothing", 0.0, "label smoothing epsilon of the cross-entropy"},
      {"distill_from", "",
       "knowledge distillation (Hinton et al. 2015): a model file whose outputs, softened by distill_temperature, the "
       "trained model learns besides the labels (same input and classes); empty = off"},
      {"distill_temperature", 4.0, "distillation: softmax temperature T of both models' outputs (> 0)"},
      {"distill_weight", 0.5,
       "distillation: weight w in [0, 1] of the soft loss T^2 KL(teacher || student); the labels' cross-entropy "
       "gets 1 - w"},
      {"augment", "none", "none | flip | crop | crop+flip (crop pads by crop_pad and crops back)"},
      {"input_jpeg_quality", 0,
       "compressed inputs: pass the test images through JPEG at this quality (1-100) before the network, bits per "
       "pixel reported in results.json data.input_jpeg (0: off)"},
      {"input_jpeg_train", false, "with input_jpeg_quality: the training (and validation) images too"},
      {"crop_pad", 4, "padding of the random crop"},
      {"cutout", 0,
       "side of a square set to the mean at a random centre of each training image (DeVries & Taylor 2017); 0 = off"},
      {"seed", 0, "seed of init, shuffling, augmentation, dropout"},
      {"val_split", -1,
       "training images held out as a validation set (evaluated every epoch; the plateau schedule watches its loss), "
       "drawn stratified by class with a fixed seed independent of `seed`, so every run on a dataset holds out the "
       "same images; -1 = auto: 5000 for mnist, fashion-mnist, cifar10, cifar100 when schedule=plateau, else 0"},
      {"init", "",
       "initialize weights from this model file (fine-tuning, e.g. approximate-aware); the spec must match"},
      {"eval_batch", 500, "batch size of test-set evaluation"},
      {"progress_s", 3.0, "seconds between progress lines"},
      {"workers", 1, "data-parallel workers (in-process, or MPI ranks with --dist mpi)"},
      {"threads", 0,
       "oneDNN threads per worker (0: OMP_NUM_THREADS if set, else the cores shared evenly by the in-process workers, "
       "or an MPI rank's bound cores); in-process workers run in parallel, each on its own replica of the model. "
       "In-process and MPI runs with the same threads per worker give the same numbers"},
      {"compressor", "none", "gradient compressor spec (none, fp16, topk:R, dgc:R, powersgd:R, qsgd:L, ...)"},
      {"dense_below", 1024, "tensors with fewer elements than this are exchanged dense"},
      {"dense_1d", true, "1-D tensors (biases, batch-norm) are exchanged dense"},
      {"compress_warmup_epochs", 0, "DGC density warm-up epochs"},
      {"error_sample_every", 50, "steps between samples of the aggregated-vs-dense gradient error"},
      {"bandwidth_gbps", 1.0, "network cost model: link bandwidth (Gbit/s) for simulated communication time"},
      {"latency_us", 50.0, "network cost model: per-message latency (microseconds)"},
      {"comm_pattern", "auto",
       "network cost model: auto (ring allreduce for summable payloads, allgather for the rest) | allreduce | "
       "allgather | ps (parameter server): charge every byte by that pattern"},
      {"target_accuracy", -1.0,
       "time-to-accuracy: the simulated time (per-worker compute + modelled communication) until the test accuracy "
       "first reaches this fraction, e.g. 0.99 (-1: not reported)"},
      {"multiplier", "",
       "approximate multiplier for conv/linear forward (exact, trunc:K, bam:H,V, mitchell, drum:K, lut:FILE); empty = "
       "fp32"},
      {"bits", 8,
       "weight bit-width when a multiplier is set: 2-8 (approximate multipliers have 8-bit operands); 9-16 with "
       "multiplier=exact or exact:signed only, run as fake quantization (quantize-dequantize, fp32 conv/linear)"},
      {"act_bits", 8,
       "activation bit-width when a multiplier is set: 2-8; 9-16 with multiplier=exact or exact:signed only (fake "
       "quantization)"},
      {"approx_mode", "lut", "lut | functional | lowrank:R"},
      {"approx_layers", "all",
       "which conv/linear layers use the multiplier: all | inner (first and last stay fp32) | comma-separated layer "
       "indices"},
      {"approx_grad", "ste", "gradient of approximate layers: ste (straight-through) | lut (table finite differences)"},
      {"per_channel", true, "weights of approximate layers quantized per output channel (false: one scale per tensor)"},
      {"layer_bits", "",
       "per-layer bit-widths W/A, one per conv/linear layer in model order (e.g. 8/8,4/6,4/6,8/8); overrides "
       "bits/act_bits; each 2-8, or 9-16 with multiplier=exact (those layers run as fake quantization)"},
      {"act_quant", "symmetric",
       "activation codes of signed multipliers: affine (zero point from [min, max]) | symmetric (zero point 0: "
       "0.0 is code 0, so approximate products of small activations stay small)"},
      {"act_calibration", "batch",
       "activation range of approximate layers: batch (each batch's min/max) | minmax:N | percentile:N[:P] (fixed, "
       "from N training batches)"},
  };
  return keys;
}

static const KeyInfo* find_key(const std::string& k) {
  for (auto& ki : config_keys())
    if (ki.name == k) return &ki;
  return nullptr;
}

static std::string known_keys() {
  std::string s;
  for (auto& ki : config_keys()) s += (s.empty() ? "" : ", ") + ki.name;
  return s;
}

Config::Config() {
  values_ = json::object();
  for (auto& ki : config_keys()) values_[ki.name] = ki.default_value;
}

void Config::put(const std::string& key, const json& v, const std::string& where) {
  const KeyInfo* ki = find_key(key);
  FRUGAL_CHECK(ki, where, ": unknown config key '", key, "'. Known keys: ", known_keys());
  const json& d = ki->default_value;
  bool ok = (d.is_boolean() && v.is_boolean()) || (d.is_string() && v.is_string()) ||
            (d.is_number_integer() && v.is_number_integer()) || (d.is_number_float() && v.is_number());
  FRUGAL_CHECK(ok, where, ": key '", key, "' expects a ", d.type_name(), " (default ", d.dump(), "), got ", v.dump());
  values_[key] = d.is_number_float() ? json(v.get<double>()) : v;
}

void Config::merge(const json& j, const std::string& where) {
  FRUGAL_CHECK(j.is_object(), where, ": a config must be a JSON object of keys, got ", j.type_name());
  for (auto& [k, v] : j.items()) {
    if (k.size() && k[0] == '_') continue;  // "_comment" and friends
    put(k, v, where);
  }
}

void Config::set(const std::string& a) {
  auto eq = a.find('=');
  FRUGAL_CHECK(eq != std::string::npos && eq > 0, "--set '", a, "': expected key=value");
  std::string key = a.substr(0, eq), val = a.substr(eq + 1);
  const KeyInfo* ki = find_key(key);
  FRUGAL_CHECK(ki, "--set: unknown config key '", key, "'. Known keys: ", known_keys());
  const json& d = ki->default_value;
  json v;
  std::string where = "--set " + key;
  try {
    if (d.is_string()) {
      v = val;
    } else if (d.is_boolean()) {
      FRUGAL_CHECK(val == "true" || val == "false" || val == "1" || val == "0", where,
                   ": expected true or false, got '", val, "'");
      v = (val == "true" || val == "1");
    } else if (d.is_number_integer()) {
      size_t pos = 0;
      long long x = std::stoll(val, &pos);
      FRUGAL_CHECK(pos == val.size(), where, ": expected an integer, got '", val, "'");
      v = x;
    } else {
      size_t pos = 0;
      double x = std::stod(val, &pos);
      FRUGAL_CHECK(pos == val.size(), where, ": expected a number, got '", val, "'");
      v = x;
    }
  } catch (const std::logic_error&) {
    FRUGAL_FAIL(where, ": cannot parse '", val, "' as ", d.type_name());
  }
  put(key, v, where);
}

json read_json_file(const std::string& path) {
  std::ifstream in(path);
  FRUGAL_CHECK(in.good(), "cannot open '", path, "': no such file or not readable");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < std::min(text.size(), static_cast<size_t>(e.byte ? e.byte - 1 : 0)); ++i) {
      if (text[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    FRUGAL_FAIL("malformed JSON in '", path, "' at line ", line, ", column ", col, " (byte ", e.byte, "): ", e.what());
  }
}

void Config::load_file(const std::string& path) { merge(read_json_file(path), path); }

int64_t Config::i(const std::string& k) const { return values_.at(k).get<int64_t>(); }
double Config::f(const std::string& k) const { return values_.at(k).get<double>(); }
bool Config::b(const std::string& k) const { return values_.at(k).get<bool>(); }
std::string Config::s(const std::string& k) const { return values_.at(k).get<std::string>(); }

std::string Config::describe() {
  std::ostringstream os;
  for (auto& ki : config_keys()) {
    std::string d = ki.default_value.dump();
    os << "  " << ki.name << std::string(ki.name.size() < 24 ? 24 - ki.name.size() : 1, ' ') << ki.help << " [default "
       << d << "]\n";
  }
  return os.str();
}

}  // namespace frugal::io
