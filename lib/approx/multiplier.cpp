#include "approx/multiplier.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>

#include "io/files.h"
#include "util/check.h"
#include "util/spec_string.h"

namespace frugal::approx {
namespace {

int msb(uint32_t x) { return 31 - std::countl_zero(x); }  // requires x > 0

int parse_int(const std::string& s, const std::string& spec, const char* what, int lo, int hi) {
  int v = 0;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  FRUGAL_CHECK(r.ec == std::errc() && r.ptr == s.data() + s.size() && v >= lo && v <= hi,
               "multiplier spec '", spec, "': ", what, " must be an integer in [", lo, ",", hi, "], got '",
               s, "'");
  return v;
}

enum class Kind { exact, trunc, bam, mitchell, drum };

/// Unsigned 8-bit cores (operands in [0,255]; signed variants call them on magnitudes <= 128).
/// exact.
/// trunc:K  — operand truncation: the K low bits of EACH OPERAND are cleared before an exact multiply
///            (TFApprox's suggested emulation of lower bit-width, tf-approximate issue #5).
/// bam:H,V  — broken-array multiplier (Mahdiani, Ahmadi, Fakhraie, Lucas, IEEE TCAS-I 57(4), 2010, §III):
///            the partial-product bit a_i*b_j (weight 2^(i+j)) of the array is dropped when it lies in
///            one of the H lowest rows (j < H, rows = bits of operand b) or right of the vertical break
///            line (column i+j < V).
/// mitchell — Mitchell's logarithmic multiplier (IRE Trans. Electronic Computers, 1962): with
///            a = 2^ka (1+xa), log2 a ~ ka + xa; the antilog of ka+kb+xa+xb is 2^(ka+kb) (1+xa+xb)
///            when xa+xb < 1, else 2^(ka+kb+1) (xa+xb). Fractions are exact (no truncation).
/// drum:K   — DRUM (Hashemi, Bahar, Reda, ICCAD 2015, §3): each operand with more than K significant
///            bits keeps its K bits from the leading one, the lowest kept bit forced to 1 (the
///            unbiasing rounding bit); a KxK exact multiply and a shift restore the magnitude.
int32_t drum_operand(uint32_t x, int k) {
  if (x < (1u << k)) return int32_t(x);
  int s = msb(x) - k + 1;
  return int32_t(((x >> s) | 1u) << s);
}

int32_t core_mul(Kind kind, int p1, int p2, uint32_t a, uint32_t b) {
  switch (kind) {
    case Kind::exact:
      return int32_t(a * b);
    case Kind::trunc: {
      uint32_t m = ~((1u << p1) - 1u);
      return int32_t((a & m) * (b & m));
    }
    case Kind::bam: {
      int32_t s = 0;
      for (int j = p1; j < 8; ++j) {
        if (!((b >> j) & 1u)) continue;
        for (int i = 0; i < 8; ++i)
          if (((a >> i) & 1u) && i + j >= p2) s += 1 << (i + j);
      }
      return s;
    }
    case Kind::mitchell: {
      if (a == 0 || b == 0) return 0;
      int ka = msb(a), kb = msb(b);
      uint32_t fa = a - (1u << ka), fb = b - (1u << kb);
      uint32_t frac = (fa << kb) + (fb << ka);  // 2^(ka+kb) (xa + xb)
      uint32_t one = 1u << (ka + kb);
      return int32_t(frac < one ? one + frac : 2u * frac);
    }
    case Kind::drum:
      return drum_operand(a, p1) * drum_operand(b, p1);
  }
  return 0;
}

class FunctionalMultiplier final : public Multiplier {
 public:
  FunctionalMultiplier(Kind kind, int p1, int p2, std::string base) : kind_(kind), p1_(p1), p2_(p2), base_(std::move(base)) {}
  std::string name() const override { return base_ + (is_signed ? ":signed" : ""); }
  int32_t mul(int32_t a, int32_t b) const override {
    if (!is_signed) return core_mul(kind_, p1_, p2_, uint32_t(a), uint32_t(b));
    int32_t s = ((a < 0) != (b < 0)) ? -1 : 1;
    return s * core_mul(kind_, p1_, p2_, uint32_t(std::abs(a)), uint32_t(std::abs(b)));
  }
  bool decomposition(Decomposition& d) const override;
  bool is_exact() const override { return kind_ == Kind::exact; }

 private:
  Kind kind_;
  int p1_, p2_;
  std::string base_;
};

bool FunctionalMultiplier::decomposition(Decomposition& d) const {
  d = Decomposition{};
  // Core maps over magnitudes m in [0,255]: a list of (alpha(m), beta(m)) term pairs.
  std::vector<std::pair<std::array<int32_t, 256>, std::array<int32_t, 256>>> terms, narrow;
  auto add_to = [](auto& list, auto fa, auto fb) {
    std::array<int32_t, 256> x{}, y{};
    for (int m = 0; m < 256; ++m) x[m] = fa(uint32_t(m)), y[m] = fb(uint32_t(m));
    list.emplace_back(x, y);
  };
  auto add_term = [&](auto fa, auto fb) { add_to(terms, fa, fb); };
  auto ident = [](uint32_t m) { return int32_t(m); };
  switch (kind_) {
    case Kind::exact:
    case Kind::mitchell:  // mitchell = a*b - min(fa*fb, (2^ka-fa)*(2^kb-fb)), see below
      add_term(ident, ident);
      break;
    case Kind::trunc: {
      uint32_t mk = ~((1u << p1_) - 1u);
      add_term([mk](uint32_t m) { return int32_t(m & mk); }, [mk](uint32_t m) { return int32_t(m & mk); });
      break;
    }
    case Kind::drum: {
      int k = p1_;
      add_term([k](uint32_t m) { return drum_operand(m, k); }, [k](uint32_t m) { return drum_operand(m, k); });
      break;
    }
    case Kind::bam: {
      // sum_{j>=H} b_j 2^j (a with its max(0,V-j) low bits cleared): rows j >= max(H,V) keep all of a.
      int h = p1_, v = p2_;
      int full = std::max(h, v);
      if (full < 8) {
        uint32_t mk = 0xFFu & ~((1u << full) - 1u);
        add_term(ident, [mk](uint32_t m) { return int32_t(m & mk); });
      }
      for (int j = h; j < std::min(v, 8); ++j) {
        int cut = v - j;
        uint32_t amask = cut >= 8 ? 0u : (0xFFu & ~((1u << cut) - 1u));
        if (amask == 0) continue;
        add_term([amask](uint32_t m) { return int32_t(m & amask); },
                 [j](uint32_t m) { return int32_t(((m >> j) & 1u) << j); });
      }
      // The narrow form, over the bits of a: bit i (weight 2^i) meets the rows j >= max(H, V - i), i.e. b with
      // its low max(H, V - i) bits cleared. A = a_i 2^i <= 128: one u8 part per term on the pre-VNNI layout (the
      // row form above has 8-bit A values: two parts each).
      for (int i = 0; i < 8; ++i) {
        const int cut = std::max(h, v - i);
        if (cut >= 8) continue;
        const uint32_t bmask = 0xFFu & ~((1u << cut) - 1u);
        add_to(narrow, [i](uint32_t m) { return int32_t(m & (1u << i)); },
               [bmask](uint32_t m) { return int32_t(m & bmask); });
      }
      break;
    }
  }
  // sign-magnitude codes: the sign of a on the A side, the sign of b on the B side
  auto signed_maps = [&](const std::array<int32_t, 256>& x, const std::array<int32_t, 256>& y,
                         std::vector<std::array<int16_t, 256>>& as, std::vector<std::array<int16_t, 256>>& bs) {
    std::array<int16_t, 256> ax{}, by{};
    for (int c = 0; c < 256; ++c) {
      int32_t v = decode(uint8_t(c), is_signed);
      int32_t s = v < 0 ? -1 : 1;
      int32_t m = std::abs(v);
      ax[size_t(c)] = int16_t(s * x[size_t(m)]);
      by[size_t(c)] = int16_t(s * y[size_t(m)]);
    }
    as.push_back(ax), bs.push_back(by);
  };
  for (auto& [x, y] : narrow) signed_maps(x, y, d.a_narrow, d.b_narrow);
  for (auto& [x, y] : terms) signed_maps(x, y, d.a_terms, d.b_terms);
  if (kind_ == Kind::mitchell) {
    // Without the carry (xa+xb < 1) Mitchell's result is a*b - fa*fb; with it, a*b - (2^ka-fa)(2^kb-fb);
    // the carry happens exactly when fa*fb >= (2^ka-fa)(2^kb-fb), so the error is minus the smaller one.
    d.has_min = true;
    for (int c = 0; c < 256; ++c) {
      int32_t v = decode(uint8_t(c), is_signed);
      uint32_t m = uint32_t(std::abs(v));
      int16_t f = 0, f2 = 0;
      if (m) {
        int k = msb(m);
        f = int16_t(m - (1u << k));
        f2 = int16_t((1u << k) - uint32_t(f));
      }
      d.fa[c] = d.fb[c] = f;
      d.fa2[c] = d.fb2[c] = f2;
      d.sa[c] = d.sb[c] = int16_t(v < 0 ? -1 : 1);
    }
  }
  return true;
}

class LutMultiplier final : public Multiplier {
 public:
  LutMultiplier(std::string path, std::vector<int32_t> table) : path_(std::move(path)), table_(std::move(table)) {}
  std::string name() const override { return "lut:" + path_ + (is_signed ? ":signed" : ""); }
  int32_t mul(int32_t a, int32_t b) const override { return table_[size_t(code(a)) * 256 + code(b)]; }

 private:
  std::string path_;
  std::vector<int32_t> table_;
};

}  // namespace

namespace {
int32_t sum_of_terms(const std::vector<std::array<int16_t, 256>>& a, const std::vector<std::array<int16_t, 256>>& b,
                     uint8_t ca, uint8_t cb) {
  int32_t s = 0;
  for (size_t t = 0; t < a.size(); ++t) s += int32_t(a[t][ca]) * b[t][cb];
  return s;
}
}  // namespace

int32_t Decomposition::eval(uint8_t ca, uint8_t cb) const {
  int32_t s = sum_of_terms(a_terms, b_terms, ca, cb);
  if (has_min) {
    int32_t p1 = int32_t(fa[ca]) * fb[cb], p2 = int32_t(fa2[ca]) * fb2[cb];
    s -= int32_t(sa[ca]) * sb[cb] * std::min(p1, p2);
  }
  return s;
}

int32_t Decomposition::eval_narrow(uint8_t ca, uint8_t cb) const {
  return sum_of_terms(a_narrow, b_narrow, ca, cb);
}

std::unique_ptr<Multiplier> make_multiplier(const std::string& spec) {
  FRUGAL_CHECK(!spec.empty(), "empty multiplier spec; expected e.g. exact, trunc:2, bam:0,6, mitchell, drum:4, lut:FILE");
  const util::SpecFields fields = util::split_spec(spec, "multiplier spec");
  std::vector<std::string> parts{fields.name};
  parts.insert(parts.end(), fields.fields.begin(), fields.fields.end());
  // Trailing options.
  bool is_signed = false;
  double power = -1;
  while (parts.size() > 1) {
    const std::string& p = parts.back();
    if (p == "signed") {
      is_signed = true;
    } else if (p.rfind("power=", 0) == 0) {
      std::string v = p.substr(6);
      char* end = nullptr;
      power = std::strtod(v.c_str(), &end);
      FRUGAL_CHECK(!v.empty() && end == v.c_str() + v.size() && power > 0 && power <= 10,
                   "multiplier spec '", spec, "': power must be a number in (0,10], got '", v, "'");
    } else {
      break;
    }
    parts.pop_back();
  }
  const std::string& type = parts[0];
  std::unique_ptr<Multiplier> m;
  double default_power = 1.0;
  auto nargs = [&](size_t n, const char* usage) {
    FRUGAL_CHECK(parts.size() == n + 1, "multiplier spec '", spec, "': expected ", usage);
  };
  if (type == "exact") {
    nargs(0, "'exact' with no argument");
    m = std::make_unique<FunctionalMultiplier>(Kind::exact, 0, 0, "exact");
  } else if (type == "trunc") {
    nargs(1, "trunc:K with K in [0,7] operand bits dropped");
    int k = parse_int(parts[1], spec, "K", 0, 7);
    m = std::make_unique<FunctionalMultiplier>(Kind::trunc, k, 0, "trunc:" + std::to_string(k));
    default_power = std::pow((8.0 - k) / 8.0, 2);  // array area ~ operand bits^2 (estimate)
  } else if (type == "bam") {
    nargs(1, "bam:H,V (horizontal break rows H in [0,8], vertical break column V in [0,15])");
    auto hv = util::split(parts[1], ',');
    FRUGAL_CHECK(hv.size() == 2, "multiplier spec '", spec, "': expected bam:H,V, e.g. bam:0,6");
    int h = parse_int(hv[0], spec, "H", 0, 8), v = parse_int(hv[1], spec, "V", 0, 15);
    m = std::make_unique<FunctionalMultiplier>(Kind::bam, h, v, "bam:" + std::to_string(h) + "," + std::to_string(v));
    int kept = 0;
    for (int j = h; j < 8; ++j)
      for (int i = 0; i < 8; ++i) kept += (i + j >= v);
    default_power = kept / 64.0;  // kept partial-product cells / 64 (estimate)
  } else if (type == "mitchell") {
    nargs(0, "'mitchell' with no argument");
    m = std::make_unique<FunctionalMultiplier>(Kind::mitchell, 0, 0, "mitchell");
    default_power = 0.5;  // leading-one detectors + adder + shifter (estimate; override with power=)
  } else if (type == "drum") {
    nargs(1, "drum:K with K in [2,8] kept bits");
    int k = parse_int(parts[1], spec, "K", 2, 8);
    m = std::make_unique<FunctionalMultiplier>(Kind::drum, k, 0, "drum:" + std::to_string(k));
    default_power = std::min(1.0, std::pow(k / 8.0, 2) + 0.15);  // KxK core + LOD/shifters (estimate)
  } else if (type == "lut") {
    FRUGAL_CHECK(parts.size() >= 2 && !parts[1].empty(), "multiplier spec '", spec, "': expected lut:FILE");
    std::string path = parts[1];
    for (size_t i = 2; i < parts.size(); ++i) path += ":" + parts[i];
    m = std::make_unique<LutMultiplier>(path, read_lut_file(path, is_signed));
  } else {
    FRUGAL_FAIL("unknown multiplier '", type, "' in spec '", spec,
                "'; expected exact, trunc:K, bam:H,V, mitchell, drum:K or lut:FILE (options :signed, :power=P)");
  }
  m->is_signed = is_signed;
  m->relative_power = power > 0 ? power : default_power;
  return m;
}

std::vector<int32_t> build_table(const Multiplier& m) {
  std::vector<int32_t> t(65536);
  for (int ca = 0; ca < 256; ++ca)
    for (int cb = 0; cb < 256; ++cb)
      t[size_t(ca) * 256 + cb] = m.mul(decode(uint8_t(ca), m.is_signed), decode(uint8_t(cb), m.is_signed));
  return t;
}

const std::vector<int32_t>& Multiplier::table() const {
  std::call_once(table_once_, [this] { table_ = build_table(*this); });
  return table_;
}

const TableGradient& Multiplier::gradient() const {
  std::call_once(gradient_once_, [this] { gradient_ = std::make_shared<const TableGradient>(table_gradient(*this)); });
  return *gradient_;
}

std::vector<int32_t> read_lut_file(const std::string& path, bool is_signed) {
  std::ifstream f(path, std::ios::binary);
  FRUGAL_CHECK(f.good(), "cannot open LUT file '", path, "'; give a 256x256 table (binary uint16 or text)");
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const size_t kBinary = 65536 * 2;
  auto is_text_byte = [](unsigned char c) {
    return (c >= '0' && c <= '9') || c == ',' || c == ';' || c == ' ' || c == '\t' || c == '\n' || c == '\r' ||
           c == '-' || c == '+';
  };
  bool named_text = path.size() > 4 && (path.ends_with(".csv") || path.ends_with(".txt"));
  std::vector<int32_t> t(65536);
  if (bytes.size() == kBinary && !named_text) {
    for (size_t i = 0; i < 65536; ++i) {
      uint16_t u = uint16_t(uint8_t(bytes[2 * i])) | uint16_t(uint16_t(uint8_t(bytes[2 * i + 1])) << 8);
      t[i] = is_signed ? int32_t(int16_t(u)) : int32_t(u);
    }
    return t;
  }
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (!is_text_byte(uint8_t(bytes[i]))) {
      FRUGAL_CHECK(bytes.size() <= kBinary, "LUT file '", path, "' is ", bytes.size(),
                   " bytes: too long for the binary layout (131,072 bytes = 65,536 ",
                   is_signed ? "int16" : "uint16", " little-endian) and not text (byte offset ", i,
                   " is not a digit, sign, comma or space)");
      FRUGAL_FAIL("LUT file '", path, "' is truncated: binary data ends at byte offset ", bytes.size(),
                  " but the 256x256 ", is_signed ? "int16" : "uint16", " layout needs 131,072 bytes (byte offset ",
                  i, " is not text, so it is not a CSV table either); regenerate the table");
    }
  }
  const int64_t lo = is_signed ? -32768 : 0, hi = is_signed ? 32767 : 65535;
  size_t n = 0, line_no = 0, pos = 0;
  while (pos < bytes.size()) {
    size_t eol = bytes.find('\n', pos);
    if (eol == std::string::npos) eol = bytes.size();
    ++line_no;
    size_t count = 0, i = pos;
    while (i < eol) {
      while (i < eol && (bytes[i] == ',' || bytes[i] == ';' || bytes[i] == ' ' || bytes[i] == '\t' || bytes[i] == '\r')) ++i;
      if (i >= eol) break;
      size_t j = i;
      while (j < eol && bytes[j] != ',' && bytes[j] != ';' && bytes[j] != ' ' && bytes[j] != '\t' && bytes[j] != '\r') ++j;
      std::string tok = bytes.substr(i, j - i);
      int64_t v = 0;
      const char* b = tok.data() + (tok[0] == '+' ? 1 : 0);
      auto r = std::from_chars(b, tok.data() + tok.size(), v);
      FRUGAL_CHECK(r.ec == std::errc() && r.ptr == tok.data() + tok.size(), "LUT file '", path, "' line ", line_no,
                   " (byte offset ", i, "): cannot parse '", tok, "' as an integer");
      FRUGAL_CHECK(v >= lo && v <= hi, "LUT file '", path, "' line ", line_no, " (byte offset ", i, "): value ", v,
                   " out of range [", lo, ",", hi, "] for a ", is_signed ? "signed" : "unsigned",
                   " 8x8 multiplier", is_signed ? "" : " (add :signed to the spec for a signed table)");
      FRUGAL_CHECK(n < 65536, "LUT file '", path, "' line ", line_no, ": more than 65,536 numbers");
      t[n++] = int32_t(v);
      ++count;
      i = j;
    }
    FRUGAL_CHECK(count == 0 || count == 1 || count == 256, "LUT file '", path, "' line ", line_no, " holds ", count,
                 " numbers; expected 256 per line (256 rows of 256) or one per line");
    pos = eol + 1;
  }
  FRUGAL_CHECK(n == 65536, "LUT file '", path, "' holds ", n, " numbers; a 256x256 table needs 65,536 (index a*256+b)");
  return t;
}

void write_lut_file(const std::string& path, const std::vector<int32_t>& table, bool is_signed) {
  FRUGAL_CHECK(table.size() == 65536, "write_lut_file: table has ", table.size(), " entries, expected 65,536");
  std::string bytes(65536 * 2, '\0');
  for (size_t i = 0; i < 65536; ++i) {
    int32_t v = table[i];
    FRUGAL_CHECK(is_signed ? (v >= -32768 && v <= 32767) : (v >= 0 && v <= 65535), "write_lut_file: entry ", i,
                 " = ", v, " does not fit ", is_signed ? "int16" : "uint16");
    uint16_t u = uint16_t(v);
    bytes[2 * i] = char(u & 0xFF);
    bytes[2 * i + 1] = char(u >> 8);
  }
  // atomically (a temporary file, then rename): a reader never sees a half-written table
  io::write_file_atomic(path, bytes);
}

TableGradient table_gradient(const Multiplier& m) {
  TableGradient g;
  g.d_da.resize(65536);
  g.d_db.resize(65536);
  const int lo = m.lo(), hi = m.hi();
  const std::vector<int32_t>& t = m.table();
  auto at = [&](int a, int b) { return float(t[size_t(code(a)) * 256 + code(b)]); };
  for (int a = lo; a <= hi; ++a) {
    for (int b = lo; b <= hi; ++b) {
      // secant over about one step of a step-structured design (DRUM, truncation): h = max(1, |x|/8)
      const int ha = std::max(1, std::abs(a) / 8), hb = std::max(1, std::abs(b) / 8);
      int a0 = std::max(lo, a - ha), a1 = std::min(hi, a + ha);
      int b0 = std::max(lo, b - hb), b1 = std::min(hi, b + hb);
      size_t i = size_t(code(a)) * 256 + code(b);
      g.d_da[i] = (at(a1, b) - at(a0, b)) / float(a1 - a0);
      g.d_db[i] = (at(a, b1) - at(a, b0)) / float(b1 - b0);
    }
  }
  return g;
}

}  // namespace frugal::approx
