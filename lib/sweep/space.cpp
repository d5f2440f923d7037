#include "sweep/space.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <set>

#include "io/files.h"
#include "util/check.h"

namespace frugal::sweep {

using json = nlohmann::json;

namespace {
const io::KeyInfo* key_info(const std::string& key) {
  for (const auto& k : io::config_keys())
    if (k.name == key) return &k;
  return nullptr;
}

std::string known_keys() {
  std::string s;
  for (const auto& k : io::config_keys()) s += (s.empty() ? "" : ", ") + k.name;
  return s;
}

double round_sig(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return std::stod(buf);
}

/// A number for config key `ki`: integer keys get integers (rounded), float keys doubles.
json typed_number(const io::KeyInfo& ki, double v) {
  if (ki.default_value.is_number_integer()) return json(static_cast<int64_t>(std::llround(v)));
  return json(v);
}

/// A list value as given, numbers for float keys as doubles (so 1 and 1.0 are one value).
json typed_number_or_same(const io::KeyInfo& ki, const json& x) {
  if (ki.default_value.is_number_float() && x.is_number()) return json(x.get<double>());
  return x;
}

Dimension parse_range(const io::KeyInfo& ki, const json& r, const std::string& where) {
  FRUGAL_CHECK(r.is_array() && r.size() == 3 && r[0].is_number() && r[1].is_number() && r[2].is_number(), where,
               ": \"range\" expects [lo, hi, step] (numbers), got ", r.dump());
  const double lo = r[0].get<double>(), hi = r[1].get<double>(), step = r[2].get<double>();
  FRUGAL_CHECK(step > 0 && lo <= hi, where, ": \"range\" [", lo, ", ", hi, ", ", step,
               "] needs step > 0 and lo <= hi");
  const double count = std::floor((hi - lo) / step + 1e-9) + 1;
  FRUGAL_CHECK(count <= 10000, where, ": \"range\" has ", count, " values; at most 10000");
  const bool ints = r[0].is_number_integer() && r[1].is_number_integer() && r[2].is_number_integer();
  Dimension d;
  d.key = ki.name;
  d.kind = Dimension::Kind::range;
  for (int64_t i = 0; i < static_cast<int64_t>(count); ++i) {
    const double v = lo + static_cast<double>(i) * step;
    d.values.push_back(ints ? json(static_cast<int64_t>(std::llround(v))) : typed_number(ki, round_sig(v, 12)));
  }
  d.lo = lo;
  d.hi = d.values.back().get<double>();
  return d;
}

Dimension parse_log(const io::KeyInfo& ki, const json& v, const std::string& where) {
  const json& r = v["log"];
  FRUGAL_CHECK(r.is_array() && r.size() == 2 && r[0].is_number() && r[1].is_number(), where,
               ": \"log\" expects [lo, hi] (numbers), got ", r.dump());
  const double lo = r[0].get<double>(), hi = r[1].get<double>();
  FRUGAL_CHECK(lo > 0 && lo <= hi, where, ": \"log\" [", lo, ", ", hi, "] needs 0 < lo <= hi");
  FRUGAL_CHECK(v.contains("n") && v["n"].is_number_integer() && v["n"].get<int64_t>() >= 1 &&
                   v["n"].get<int64_t>() <= 10000,
               where, ": \"log\" needs \"n\": the number of grid points (1-10000), e.g. {\"log\": [0.01, 0.1], \"n\": 3}");
  const int64_t n = v["n"].get<int64_t>();
  Dimension d;
  d.key = ki.name;
  d.kind = Dimension::Kind::log;
  d.lo = lo;
  d.hi = hi;
  std::set<std::string> seen;
  for (int64_t i = 0; i < n; ++i) {
    const double t = n == 1 ? 0.0 : static_cast<double>(i) / static_cast<double>(n - 1);
    const json x = typed_number(ki, round_sig(lo * std::pow(hi / lo, t), 6));
    if (seen.insert(x.dump()).second) d.values.push_back(x);  // integer keys may round two points together
  }
  return d;
}

/// Uniform in [0, 1) from 53 bits of the generator (the same on every platform, unlike std::*_distribution).
double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

json draw(const Dimension& d, std::mt19937_64& rng) {
  if (d.kind == Dimension::Kind::log) {
    const io::KeyInfo* ki = key_info(d.key);
    return typed_number(*ki, round_sig(d.lo * std::pow(d.hi / d.lo, uniform01(rng)), 6));
  }
  const size_t i = std::min(d.values.size() - 1, static_cast<size_t>(uniform01(rng) * static_cast<double>(d.values.size())));
  return d.values[i];
}

double grid_size(const std::vector<Dimension>& space) {
  double n = 1;
  for (const auto& d : space) n *= static_cast<double>(d.values.size());
  return n;
}

std::vector<Objective> parse_objectives(const json& j, const std::string& where) {
  std::vector<Objective> out;
  if (!j.contains("objectives")) {
    out.push_back({"metrics.val_accuracy", Direction::maximize});
    return out;
  }
  const json& o = j["objectives"];
  FRUGAL_CHECK(o.is_array() && !o.empty(), where, ": \"objectives\" expects a non-empty list of ",
               "{\"metric\": \"metrics.val_accuracy\", \"direction\": \"maximize\"}");
  for (const json& e : o) {
    FRUGAL_CHECK(e.is_object() && e.contains("metric") && e["metric"].is_string(), where,
                 ": each objective needs \"metric\" (a dotted path into results.json), got ", e.dump());
    Objective ob;
    ob.metric = e["metric"].get<std::string>();
    const std::string dir = e.value("direction", "maximize");
    FRUGAL_CHECK(dir == "maximize" || dir == "minimize", where, ": objective '", ob.metric, "' has direction '", dir,
                 "'; expected maximize or minimize");
    ob.direction = dir == "maximize" ? Direction::maximize : Direction::minimize;
    FRUGAL_CHECK(ob.metric.find("test_") == std::string::npos, where, ": objective '", ob.metric,
                 "' is a test-split metric; trials are chosen on the validation split (e.g. metrics.val_accuracy), "
                 "the test accuracy is reported beside");
    out.push_back(ob);
  }
  return out;
}

Halving parse_halving(const json& j, const std::string& where) {
  Halving h;
  FRUGAL_CHECK(j.contains("halving") && j["halving"].is_object(), where, ": strategy \"", j.value("strategy", ""),
               "\" needs \"halving\": {\"eta\": 3, \"min_epochs\": 1, \"max_epochs\": 9}");
  const json& o = j["halving"];
  for (const auto& [k, v] : o.items())
    FRUGAL_CHECK(k == "eta" || k == "min_epochs" || k == "max_epochs", where, ": unknown key \"halving.", k,
                 "\"; expected eta, min_epochs, max_epochs");
  h.eta = o.value("eta", 3);
  h.min_epochs = o.value("min_epochs", int64_t{1});
  h.max_epochs = o.value("max_epochs", int64_t{0});
  FRUGAL_CHECK(h.eta >= 2, where, ": halving.eta must be >= 2, got ", h.eta);
  FRUGAL_CHECK(h.min_epochs >= 1 && h.max_epochs >= h.min_epochs, where,
               ": halving needs 1 <= min_epochs <= max_epochs, got ", h.min_epochs, " and ", h.max_epochs);
  return h;
}

/// The base config: "base" file, then "config" keys, then --set; val_split defaulted for scoring.
json resolve_base(const json& j, const std::string& file, const std::vector<std::string>& sets,
                  std::vector<std::string>& notes) {
  io::Config cfg;
  if (j.contains("base")) {
    FRUGAL_CHECK(j["base"].is_string(), file, ": \"base\" expects a config file path, got ", j["base"].dump());
    std::string path = j["base"].get<std::string>();
    if (!io::file_exists(path)) {
      const std::string beside = (std::filesystem::path(file).parent_path() / path).string();
      FRUGAL_CHECK(io::file_exists(beside), file, ": base config '", path, "' not found (tried it as given and as ",
                   beside, ")");
      path = beside;
    }
    cfg.load_file(path);
  }
  if (j.contains("config")) cfg.merge(j["config"], file + " \"config\"");
  for (const auto& s : sets) cfg.set(s);
  const std::string ds = cfg.s("dataset");
  const bool standard = ds == "mnist" || ds == "fashion-mnist" || ds == "cifar10" || ds == "cifar100";
  const int64_t vs = cfg.i("val_split");
  const bool auto_nonzero = vs == -1 && standard && cfg.s("schedule") == "plateau";
  if (vs == 0 || (vs == -1 && !auto_nonzero)) {
    FRUGAL_CHECK(standard, file, ": trials are scored on a validation split, but val_split is ", vs,
                 " for dataset '", ds, "'; set val_split=N (training images to hold out) in \"config\"");
    cfg.set("val_split=5000");
    notes.push_back("val_split was " + std::to_string(vs) +
                    " (no validation images): the sweep holds out 5000 training images to score trials on");
  }
  return cfg.values();
}
}  // namespace

const json* at_path(const json& j, const std::string& path) {
  const json* cur = &j;
  size_t at = 0;
  while (true) {
    const size_t dot = path.find('.', at);
    const std::string key = path.substr(at, dot == std::string::npos ? std::string::npos : dot - at);
    if (!cur->is_object() || !cur->contains(key)) return nullptr;
    cur = &(*cur)[key];
    if (dot == std::string::npos) return cur;
    at = dot + 1;
  }
}

Dimension parse_dimension(const std::string& key, const json& v, const std::string& where) {
  const io::KeyInfo* ki = key_info(key);
  FRUGAL_CHECK(ki, where, ": unknown config key '", key, "' in \"space\". Known keys: ", known_keys());
  const std::string at = where + " space." + key;
  Dimension d;
  if (v.is_array()) {
    FRUGAL_CHECK(!v.empty(), at, ": an empty list of values");
    d.key = key;
    for (const json& x : v) d.values.push_back(typed_number_or_same(*ki, x));
  } else if (v.is_object() && v.contains("range")) {
    FRUGAL_CHECK(v.size() == 1, at, ": a range is {\"range\": [lo, hi, step]}, got ", v.dump());
    d = parse_range(*ki, v["range"], at);
  } else if (v.is_object() && v.contains("log")) {
    FRUGAL_CHECK(v.size() == 2, at, ": a log-range is {\"log\": [lo, hi], \"n\": K}, got ", v.dump());
    d = parse_log(*ki, v, at);
  } else {
    FRUGAL_FAIL(at, ": expected a list of values, {\"range\": [lo, hi, step]} or {\"log\": [lo, hi], \"n\": K}, got ",
                v.dump());
  }
  io::Config probe;  // every value must be one the key accepts
  for (const json& x : d.values) probe.merge(json{{key, x}}, at);
  return d;
}

SweepSpec parse_sweep(const json& j, const std::string& file, const std::vector<std::string>& sets) {
  FRUGAL_CHECK(j.is_object(), file, ": a sweep file is a JSON object with \"space\" (see lib/sweep/space.h)");
  static const std::set<std::string> known{"base", "config", "space", "strategy", "trials", "seed",
                                           "halving", "objectives", "parallel"};
  for (const auto& [k, v] : j.items())
    FRUGAL_CHECK(k[0] == '_' || known.count(k), file, ": unknown key \"", k,
                 "\"; a sweep file has base, config, space, strategy, trials, seed, halving, objectives, parallel");
  SweepSpec s;
  s.file = file;
  s.base = resolve_base(j, file, sets, s.notes);
  FRUGAL_CHECK(j.contains("space") && j["space"].is_object() && !j["space"].empty(), file,
               ": \"space\" expects an object of swept config keys, e.g. {\"bits\": [2, 4, 8]}");
  for (const auto& [k, v] : j["space"].items()) s.space.push_back(parse_dimension(k, v, file));
  for (const auto& setting : sets) {
    const std::string key = setting.substr(0, setting.find('='));
    for (const auto& d : s.space)
      FRUGAL_CHECK(d.key != key, "--set ", setting, ": '", key, "' is swept in ", file, "; edit its \"space\" instead");
  }
  s.strategy = j.value("strategy", "grid");
  FRUGAL_CHECK(s.strategy == "grid" || s.strategy == "random" || s.strategy == "halving" || s.strategy == "asha",
               file, ": strategy '", s.strategy, "' is not one of grid, random, halving, asha");
  FRUGAL_CHECK(!j.contains("trials") || j["trials"].is_number_integer(), file, ": \"trials\" expects an integer");
  s.trials = j.value("trials", int64_t{0});
  FRUGAL_CHECK(s.trials >= 0, file, ": \"trials\" must be >= 0, got ", s.trials);
  FRUGAL_CHECK(s.strategy != "random" || s.trials > 0, file, ": strategy random needs \"trials\": N > 0");
  FRUGAL_CHECK(!j.contains("seed") || j["seed"].is_number_unsigned(), file, ": \"seed\" expects an integer >= 0");
  s.seed = j.value("seed", uint64_t{0});
  if (s.strategy == "halving" || s.strategy == "asha") {
    s.halving = parse_halving(j, file);
    for (const auto& d : s.space)
      FRUGAL_CHECK(d.key != "epochs" && d.key != "max_steps", file, ": ", s.strategy,
                   " sets the epochs budget of each rung; remove '", d.key, "' from \"space\"");
  } else {
    FRUGAL_CHECK(!j.contains("halving"), file, ": \"halving\" is given but strategy is ", s.strategy);
  }
  s.objectives = parse_objectives(j, file);
  FRUGAL_CHECK(!j.contains("parallel") || (j["parallel"].is_number_integer() && j["parallel"].get<int>() >= 1), file,
               ": \"parallel\" expects an integer >= 1 (trials at once)");
  s.parallel = j.value("parallel", 0);
  const double n = s.strategy == "grid" || s.trials == 0 ? grid_size(s.space) : static_cast<double>(s.trials);
  FRUGAL_CHECK(n <= 100000, file, ": the sweep has ", n, " trials; at most 100000");
  return s;
}

SweepSpec load_sweep(const std::string& path, const std::vector<std::string>& sets) {
  return parse_sweep(io::read_json_file(path), path, sets);
}

std::vector<json> grid_points(const std::vector<Dimension>& space) {
  std::vector<json> out{json::object()};
  for (const auto& d : space) {
    std::vector<json> next;
    for (const json& p : out)
      for (const json& v : d.values) {
        json q = p;
        q[d.key] = v;
        next.push_back(std::move(q));
      }
    out = std::move(next);
  }
  return out;
}

std::vector<json> random_points(const std::vector<Dimension>& space, int64_t n, uint64_t seed) {
  bool finite = true;
  for (const auto& d : space) finite &= d.kind != Dimension::Kind::log;
  if (finite && grid_size(space) <= static_cast<double>(n)) return grid_points(space);
  std::mt19937_64 rng(seed);
  std::vector<json> out;
  std::set<std::string> seen;
  for (int64_t tries = 0; static_cast<int64_t>(out.size()) < n && tries < 1000 * n; ++tries) {
    json p = json::object();
    for (const auto& d : space) p[d.key] = draw(d, rng);
    if (seen.insert(p.dump()).second) out.push_back(std::move(p));
  }
  return out;
}

std::vector<json> expand_points(const SweepSpec& spec) {
  if (spec.strategy == "grid" || spec.trials == 0) {
    std::vector<json> g = grid_points(spec.space);
    if (spec.strategy == "asha") {  // seeded Fisher-Yates: ASHA starts points in this order
      std::mt19937_64 rng(spec.seed);
      for (size_t i = g.size(); i > 1; --i)
        std::swap(g[i - 1], g[std::min(i - 1, static_cast<size_t>(uniform01(rng) * static_cast<double>(i)))]);
    }
    return g;
  }
  return random_points(spec.space, spec.trials, spec.seed);
}

std::vector<Trial> first_rung(const SweepSpec& spec, const std::vector<json>& points) {
  std::vector<Trial> out;
  for (size_t i = 0; i < points.size(); ++i) {
    Trial t;
    char id[32];
    std::snprintf(id, sizeof id, "t%04zu", i);
    t.id = id;
    t.point = i;
    t.params = points[i];
    if (spec.strategy == "halving" || spec.strategy == "asha") {
      t.epochs = spec.halving.min_epochs;
      t.id += "-e" + std::to_string(t.epochs);
    }
    out.push_back(std::move(t));
  }
  return out;
}

io::Config trial_config(const SweepSpec& spec, const Trial& t, int threads) {
  io::Config cfg;
  cfg.merge(spec.base, spec.file + " (base)");
  cfg.merge(t.params, spec.file + " trial " + t.id);
  if (t.epochs > 0) cfg.set("epochs=" + std::to_string(t.epochs));
  if (threads > 0) cfg.set("threads=" + std::to_string(threads));
  return cfg;
}

json fingerprint_of(const SweepSpec& spec) {
  json base = spec.base;
  for (const char* k : {"threads", "progress_s", "data_dir"}) base.erase(k);
  json space = json::object();
  for (const auto& d : spec.space) space[d.key] = d.values;
  json f{{"base", base}, {"space", space}, {"strategy", spec.strategy}};
  if (spec.strategy != "grid") f["trials"] = spec.trials;
  if (spec.strategy != "grid" && (spec.trials > 0 || spec.strategy == "asha")) f["seed"] = spec.seed;
  if (spec.strategy == "halving" || spec.strategy == "asha")
    f["halving"] = {{"eta", spec.halving.eta},
                    {"min_epochs", spec.halving.min_epochs},
                    {"max_epochs", spec.halving.max_epochs}};
  return f;
}

std::string describe_changes(const json& before, const json& now, const std::string& at) {
  if (before.is_object() && now.is_object()) {
    std::string out;
    for (const auto& [k, v] : before.items()) {
      const std::string p = at.empty() ? k : at + "." + k;
      out += now.contains(k) ? describe_changes(v, now[k], p) : p + ": " + v.dump() + " -> (absent)\n";
    }
    for (const auto& [k, v] : now.items())
      if (!before.contains(k)) out += (at.empty() ? k : at + "." + k) + ": (absent) -> " + v.dump() + "\n";
    return out;
  }
  if (before == now) return "";
  return at + ": " + before.dump() + " -> " + now.dump() + "\n";
}

}  // namespace frugal::sweep
