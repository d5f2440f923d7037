// The one tokenizer of frugal's spec strings: compressors ("dgc:0.001:clip=5"), multipliers ("bam:0,6:signed"),
// activation calibration ("percentile:8:99.9"). A spec is fields separated by ':'; the first is the name. Each
// consumer interprets its own fields; this only splits, and refuses empty fields with a message that names the
// spec and what it is for.
#pragma once
#include <string>
#include <vector>

namespace frugal::util {

struct SpecFields {
  std::string text;                 ///< as given
  std::string name;                 ///< first field
  std::vector<std::string> fields;  ///< the fields after the name, in order
};

/// Splits `text` at ':'. `what` names the spec in errors, e.g. "compressor spec" or "config key 'act_calibration'".
/// Throws frugal::Error on an empty spec or an empty field ("drum::4", "topk:").
SpecFields split_spec(const std::string& text, const std::string& what);

/// s split at `sep` (empty parts kept: callers check them).
std::vector<std::string> split(const std::string& s, char sep);

/// Parses all of s as a finite number; false if s is empty or has anything else.
bool parse_number(const std::string& s, double& v);

}  // namespace frugal::util
