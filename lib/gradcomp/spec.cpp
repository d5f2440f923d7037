// Spec parsing and the compressor factory (see compressor.h for the grammar).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <set>

#include "gradcomp/compressors.h"
#include "util/check.h"
#include "util/spec_string.h"

namespace frugal::gradcomp {

namespace {
const char* kValid =
    "none, fp16, bf16, topk:R, randk:R, threshold:V, dgc:R[:sample=F][:clip=C][:nomask][:warmup=E], qsgd:S[:elias], "
    "terngrad[:clip=C], signsgd, efsign, onebit, powersgd:RANK[:warmup=STEPS], adaptive:R[:energy=E]; suffix +ef / +noef or prefix "
    "ef:";

void allow(const Spec& s, size_t max_args, std::set<std::string> keys, std::set<std::string> flags) {
  FRUGAL_CHECK(s.args.size() <= max_args, "compressor spec '", s.text, "': ", s.name, " takes at most ", max_args,
               " number(s), got ", s.args.size(), ". Valid specs: ", kValid);
  for (auto& [k, v] : s.kv)
    FRUGAL_CHECK(keys.count(k), "compressor spec '", s.text, "': unknown option '", k, "' for ", s.name,
                 ". Valid specs: ", kValid);
  for (auto& f : s.flags)
    FRUGAL_CHECK(flags.count(f), "compressor spec '", s.text, "': unknown flag '", f, "' for ", s.name,
                 ". Valid specs: ", kValid);
}

double ratio_arg(const Spec& s, double dflt, bool required) {
  FRUGAL_CHECK(!required || !s.args.empty(), "compressor spec '", s.text, "': ", s.name, " needs a ratio, e.g. ",
               s.name, ":0.01");
  double r = s.args.empty() ? dflt : s.args[0];
  FRUGAL_CHECK(r > 0 && r <= 1, "compressor spec '", s.text, "': ratio must be in (0, 1], got ", r);
  return r;
}

void no_ef_choice(const Spec& s, const char* why) {
  FRUGAL_CHECK(s.ef == -1, "compressor spec '", s.text, "': ", s.name, " ", why, "; drop the ef:/+ef/+noef part");
}
}  // namespace

bool Spec::has_flag(const std::string& f) const { return std::find(flags.begin(), flags.end(), f) != flags.end(); }

double Spec::number(const std::string& key, double dflt) const {
  auto it = kv.find(key);
  if (it == kv.end()) return dflt;
  double v;
  FRUGAL_CHECK(util::parse_number(it->second, v), "compressor spec '", text, "': option ", key, "=", it->second,
               " is not a number");
  return v;
}

Spec parse_spec(const std::string& text) {
  Spec s;
  s.text = text;
  std::string body = text;
  body.erase(std::remove_if(body.begin(), body.end(), [](unsigned char c) { return std::isspace(c); }), body.end());
  std::transform(body.begin(), body.end(), body.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  if (body.rfind("ef:", 0) == 0) {
    s.ef = 1;
    body = body.substr(3);
  }
  auto ends_with = [&](const std::string& suf) {
    return body.size() >= suf.size() && body.compare(body.size() - suf.size(), suf.size(), suf) == 0;
  };
  if (ends_with("+noef")) {
    FRUGAL_CHECK(s.ef == -1, "compressor spec '", text, "': both ef: and +noef given");
    s.ef = 0;
    body.resize(body.size() - 5);
  } else if (ends_with("+ef")) {
    s.ef = 1;
    body.resize(body.size() - 3);
  }
  FRUGAL_CHECK(!body.empty(), "empty compressor spec '", text, "'. Valid specs: ", kValid);
  const util::SpecFields f = util::split_spec(body, "compressor spec");
  s.name = f.name;
  for (const std::string& tok : f.fields) {
    if (auto eq = tok.find('='); eq != std::string::npos) {
      s.kv[tok.substr(0, eq)] = tok.substr(eq + 1);
    } else if (double v; util::parse_number(tok, v)) {
      s.args.push_back(v);
    } else {
      s.flags.push_back(tok);
    }
  }
  return s;
}

size_t shape_numel(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (int64_t d : shape) {
    FRUGAL_CHECK(d >= 0, "negative extent ", d, " in a parameter shape");
    FRUGAL_CHECK(d == 0 || n <= (size_t(1) << 40) / size_t(d), "parameter shape too large");
    n *= size_t(d);
  }
  return n;
}

std::unique_ptr<Compressor> make_compressor(const std::string& text, const CompressorContext& ctx) {
  const Spec s = parse_spec(text);
  const size_t n = shape_numel(ctx.shape);
  FRUGAL_CHECK(ctx.world >= 1 && ctx.worker >= 0 && ctx.worker < ctx.world, "compressor context: worker ", ctx.worker,
               " out of range for world ", ctx.world);
  const uint64_t shared = mix_seed(ctx.seed, uint64_t(ctx.param_index));
  const uint64_t priv = mix_seed(shared, 0x5eed0000ull + uint64_t(ctx.worker));
  auto wrap = [&](std::unique_ptr<Compressor> c, bool ef) -> std::unique_ptr<Compressor> {
    if (!ef) return c;
    std::string nm = c->name() + "+ef";
    return std::make_unique<ErrorFeedback>(std::move(c), n, nm);
  };
  const bool ef_opt = s.ef == -1 ? ctx.error_feedback_default : s.ef == 1;

  if (s.name == "none" || s.name == "fp32" || s.name == "dense" || s.name == "fp16" || s.name == "bf16") {
    allow(s, 0, {}, {});
    Kind k = s.name == "fp16" ? Kind::fp16 : s.name == "bf16" ? Kind::bf16 : Kind::dense;
    return wrap(std::make_unique<CastCompressor>(k), s.ef == 1);
  }
  if (s.name == "topk") {
    allow(s, 1, {}, {});
    return wrap(std::make_unique<TopK>(ratio_arg(s, 0, true)), ef_opt);
  }
  if (s.name == "randk") {
    allow(s, 1, {}, {});
    bool ef = s.ef == 1;  // unbiased (scaled) by default; +ef gives Stich's unscaled random-k with memory
    return wrap(std::make_unique<RandK>(ratio_arg(s, 0, true), !ef, shared), ef);
  }
  if (s.name == "threshold") {
    allow(s, 1, {}, {});
    FRUGAL_CHECK(s.args.size() == 1 && s.args[0] > 0, "compressor spec '", text,
                 "': threshold needs V > 0, e.g. threshold:0.01");
    return wrap(std::make_unique<Threshold>(float(s.args[0])), ef_opt);
  }
  if (s.name == "dgc") {
    allow(s, 1, {"sample", "clip", "warmup"}, {"nomask"});
    no_ef_choice(s, "has error feedback built in (momentum correction accumulates the residual)");
    Dgc::Options o;
    o.ratio = ratio_arg(s, 0, true);
    o.sample_frac = float(s.number("sample", 0.01));
    FRUGAL_CHECK(o.sample_frac > 0 && o.sample_frac <= 1, "compressor spec '", text, "': sample must be in (0, 1]");
    o.clip = float(s.number("clip", 0));
    FRUGAL_CHECK(o.clip >= 0, "compressor spec '", text, "': clip must be >= 0 (0 = off)");
    o.masking = !s.has_flag("nomask");
    o.warmup_epochs = int(s.number("warmup", ctx.warmup_epochs));
    FRUGAL_CHECK(o.warmup_epochs >= 0, "compressor spec '", text, "': warmup must be >= 0");
    return std::make_unique<Dgc>(o, n, ctx.world, priv);
  }
  if (s.name == "qsgd") {
    allow(s, 1, {}, {"elias"});
    FRUGAL_CHECK(s.args.size() == 1 && s.args[0] >= 1 && s.args[0] <= 65535 && s.args[0] == std::floor(s.args[0]),
                 "compressor spec '", text, "': qsgd needs an integer level count in [1, 65535], e.g. qsgd:16");
    return wrap(std::make_unique<Qsgd>(int(s.args[0]), s.has_flag("elias"), priv), s.ef == 1);
  }
  if (s.name == "terngrad") {
    allow(s, 0, {"clip"}, {});
    float clip = float(s.number("clip", 2.5));
    FRUGAL_CHECK(clip >= 0, "compressor spec '", text, "': clip must be >= 0 (0 = off)");
    return wrap(std::make_unique<TernGrad>(clip, priv), s.ef == 1);
  }
  if (s.name == "signsgd") {
    allow(s, 0, {}, {});
    return wrap(std::make_unique<SignCompressor>(true), s.ef == 1);
  }
  if (s.name == "efsign") {
    allow(s, 0, {}, {});
    no_ef_choice(s, "is defined with error feedback");
    return std::make_unique<ErrorFeedback>(std::make_unique<SignCompressor>(false), n, "efsign");
  }
  if (s.name == "onebit") {
    allow(s, 0, {}, {});
    no_ef_choice(s, "is defined with error feedback");
    return std::make_unique<ErrorFeedback>(std::make_unique<OneBit>(), n, "onebit");
  }
  if (s.name == "powersgd") {
    allow(s, 1, {"warmup"}, {});
    no_ef_choice(s, "has error feedback built in");
    FRUGAL_CHECK(s.args.size() == 1 && s.args[0] >= 1 && s.args[0] <= 256 && s.args[0] == std::floor(s.args[0]),
                 "compressor spec '", text, "': powersgd needs an integer rank in [1, 256], e.g. powersgd:2");
    const double warm = s.number("warmup", 0);
    FRUGAL_CHECK(warm >= 0 && warm == std::floor(warm) && warm < 1e12, "compressor spec '", text,
                 "': powersgd:R:warmup=STEPS needs a whole number of steps >= 0, got ", warm);
    return std::make_unique<PowerSgd>(int(s.args[0]), ctx.shape, shared, int64_t(warm));
  }
  if (s.name == "adaptive") {
    allow(s, 1, {"energy"}, {});
    double e = s.number("energy", 0.5);
    FRUGAL_CHECK(e > 0 && e <= 1, "compressor spec '", text, "': energy must be in (0, 1]");
    return wrap(std::make_unique<AdaptiveTopK>(ratio_arg(s, 0.01, false), e, priv), ef_opt);
  }
  FRUGAL_FAIL("unknown compressor '", s.name, "' in spec '", text, "'. Valid specs: ", kValid);
}

Collective spec_collective(const std::string& spec) {
  const Spec s = parse_spec(spec);
  static const std::set<std::string> summable = {"none", "fp32", "dense", "fp16", "bf16", "randk", "powersgd"};
  return summable.count(s.name) ? Collective::allreduce : Collective::allgather;
}


}  // namespace frugal::gradcomp
