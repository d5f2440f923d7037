// The one flat set of experiment keys shared by experiments/*.json, `--set key=value` and results.json.
// Every key has a type, a default and a help line; unknown keys are errors that list the known ones.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace frugal::io {

struct KeyInfo {
  std::string name;
  nlohmann::json default_value;  // its JSON type is the key's type (number_integer, number_float, boolean, string)
  std::string help;
};

/// All known keys, in documentation order.
const std::vector<KeyInfo>& config_keys();

class Config {
 public:
  Config();                                      // all defaults
  /// Merges a JSON object of keys (a config file's content); `where` names the file for errors.
  void merge(const nlohmann::json& j, const std::string& where);
  /// Applies "key=value" (value parsed per the key's type).
  void set(const std::string& assignment);
  void load_file(const std::string& path);       // merge(read json file)
  const nlohmann::json& values() const { return values_; }
  int64_t i(const std::string& key) const;
  double f(const std::string& key) const;
  bool b(const std::string& key) const;
  std::string s(const std::string& key) const;
  /// Markdown table of keys, defaults and help (for --help and the README).
  static std::string describe();

 private:
  void put(const std::string& key, const nlohmann::json& v, const std::string& where);
  nlohmann::json values_;
};

/// Parses a JSON file with a clear error (file, line, column) on malformed input.
nlohmann::json read_json_file(const std::string& path);

}  // namespace frugal::io
