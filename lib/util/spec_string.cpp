#include "util/spec_string.h"

#include <cmath>
#include <cstdlib>

#include "util/check.h"

namespace frugal::util {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out(1);
  for (char c : s) {
    if (c == sep)
      out.emplace_back();
    else
      out.back() += c;
  }
  return out;
}

SpecFields split_spec(const std::string& text, const std::string& what) {
  FRUGAL_CHECK(!text.empty(), "empty ", what);
  SpecFields s;
  s.text = text;
  std::vector<std::string> parts = split(text, ':');
  for (size_t i = 0; i < parts.size(); ++i)
    FRUGAL_CHECK(!parts[i].empty(), what, " '", text, "': empty field ", i + 1, " (between ':' separators)");
  s.name = parts[0];
  s.fields.assign(parts.begin() + 1, parts.end());
  return s;
}

bool parse_number(const std::string& s, double& v) {
  if (s.empty()) return false;
  char* end = nullptr;
  v = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && std::isfinite(v);
}

}  // namespace frugal::util
