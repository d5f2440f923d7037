// Approximate 8x8 multipliers: a bit-exact scalar reference (mul) per design, the 256x256 table of any
// multiplier, a separable "functional" decomposition used by the vectorized kernels, and table gradients.
//
// Spec grammar (the same string in CLI flags, experiments/*.json and result names):
//   SPEC    := TYPE [":" ARGS] { ":" OPTION }
//   TYPE    := exact | trunc:K | bam:H,V | mitchell | drum:K | lut:FILE
//   OPTION  := signed | power=P          (P = relative multiplier power vs the exact 8x8 multiplier)
// Examples: "exact", "trunc:2", "bam:0,6", "mitchell:signed", "drum:4:power=0.4", "lut:mul8u_DM1.bin",
//           "lut:mul8s_1L2H.bin:signed:power=0.71", "lut:table.csv".
// Operands are 8-bit: unsigned [0,255] or, with `signed`, [-128,127]. Functional designs are unsigned
// cores; their signed variants are sign-magnitude: mul(a,b) = sgn(a)*sgn(b)*core(|a|,|b|) (|a| <= 128).
// A signed lut: file is a native two's-complement table (int16), not sign-magnitude.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace frugal::approx {

/// Byte code of an operand: its two's-complement low byte. Tables are indexed code(a)*256 + code(b)
/// (TFApprox / EvoApproxLib / TorchApprox convention; a = activation, b = weight).
inline uint8_t code(int32_t x) { return static_cast<uint8_t>(x & 0xFF); }
/// Inverse of code() for the operand domain.
inline int32_t decode(uint8_t c, bool is_signed) { return is_signed ? int32_t(int8_t(c)) : int32_t(c); }

/// M(a,b) = sum_t A_t[code a] * B_t[code b]  -  SA[a]*SB[b]*min(FA[a]*FB[b], FA2[a]*FB2[b])
/// (the min term only when has_min). Every value fits int16 and every pair-sum of products fits int32,
/// so kernels evaluate it exactly with 16-bit multiplies (vpdpwssd / vpmullw).
struct Decomposition {
  std::vector<std::array<int16_t, 256>> a_terms, b_terms;  // (T) x 256 each
  bool has_min = false;
  std::array<int16_t, 256> fa{}, fa2{}, sa{}, fb{}, fb2{}, sb{};
  /// Optionally (designs without the min term), a second exact form M = sum_t NA_t[a] * NB_t[b] whose A values
  /// each span at most 128 (bam: one term per bit of a), so that the pre-VNNI int8 layout (onednn_terms.h) stores
  /// each term as one u8 part instead of two. Empty when the design has none; the engines pick the form with the
  /// fewer int8 channels.
  std::vector<std::array<int16_t, 256>> a_narrow, b_narrow;
  int32_t eval(uint8_t ca, uint8_t cb) const;         // scalar twin, for tests
  int32_t eval_narrow(uint8_t ca, uint8_t cb) const;  // the narrow form (requires a_narrow non-empty), for tests
};

struct TableGradient;

/// Product of two 8-bit operands. mul() is the bit-exact reference every kernel is tested against;
/// kernels never call it per multiply (they use table() or decomposition()).
class Multiplier {
 public:
  virtual ~Multiplier() = default;
  virtual std::string name() const = 0;  // canonical spec, e.g. "drum:4:signed"
  /// requires a, b in [lo(), hi()]
  virtual int32_t mul(int32_t a, int32_t b) const = 0;
  /// The separable form for the functional (no table) kernels; false when the design has none (lut:).
  virtual bool decomposition(Decomposition& out) const { return false; }
  /// True for the `exact` design (a*b): the only one whose products are defined beyond 8-bit operands, so
  /// the only one layers may run at 9-16 bits (as fake quantization, fake_quant.h).
  virtual bool is_exact() const { return false; }

  bool is_signed = false;
  int bits = 8;
  double relative_power = 1.0;  // power of this multiplier / power of the exact one (energy proxy)
  int lo() const { return is_signed ? -128 : 0; }
  int hi() const { return is_signed ? 127 : 255; }

  /// build_table(*this), built on the first call and kept: every approximate layer holding this multiplier (one
  /// std::shared_ptr<const Multiplier> from make_multiplier, shared by a model's layers) reads the one table
  /// (for lut:FILE, the file read once). Thread-safe; call it once the fields above are final.
  const std::vector<int32_t>& table() const;
  /// table_gradient(*this), built on the first call and kept, likewise (the table-gradient backward).
  const TableGradient& gradient() const;

 private:
  mutable std::once_flag table_once_, gradient_once_;
  mutable std::vector<int32_t> table_;
  mutable std::shared_ptr<const TableGradient> gradient_;
};

/// Builds a multiplier from its spec (grammar above). Throws frugal::Error naming the bad part. Build it once and
/// share it (std::shared_ptr<const Multiplier>) between layers: its table() is built once.
std::unique_ptr<Multiplier> make_multiplier(const std::string& spec);

/// Full table, 65,536 entries, index code(a)*256 + code(b). Works for any multiplier.
std::vector<int32_t> build_table(const Multiplier& m);

/// Reads a 256x256 table. Binary (exactly 131,072 bytes): uint16 little-endian, or int16 when
/// is_signed, index a*256+b (TFApprox .bin). Text: 65,536 integers separated by commas / whitespace,
/// e.g. one per line or 256 lines of 256 (a line that is not blank must then hold 256 numbers).
/// Text values must lie in [0,65535] (unsigned) or [-32768,32767] (signed).
std::vector<int32_t> read_lut_file(const std::string& path, bool is_signed);
/// Writes the binary layout read_lut_file reads (values must fit uint16 / int16).
void write_lut_file(const std::string& path, const std::vector<int32_t>& table, bool is_signed);

/// Finite-difference gradient of the product table w.r.t. each operand, for backward passes that use
/// the multiplier's own slope instead of the straight-through estimator (which uses dM/da = b,
/// dM/db = a). Central differences (M(a+h,b) - M(a-h,b)) / 2h with h = max(1, |a|/8): a secant over about
/// one step of step-structured designs (DRUM keeps the leading bits, so its steps grow with |a|; unit
/// differences there are spikes that make training diverge). Shortened at the domain's ends.
/// Indexed like build_table: d_da[code(a)*256 + code(b)]. Usage in a layer backward with quantized
/// operands: diff_a_q += diff_dst * d_da(a_q, w_q) (scales applied as for exact products).
struct TableGradient {
  std::vector<float> d_da, d_db;  // 65,536 each
};
TableGradient table_gradient(const Multiplier& m);

}  // namespace frugal::approx
