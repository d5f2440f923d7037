#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "approx/multiplier.h"
#include "util/check.h"

using namespace frugal::approx;

namespace {
const char* kFunctional[] = {"exact", "trunc:2", "trunc:5", "bam:0,6", "bam:2,5", "bam:3,0", "bam:0,12",
                             "mitchell", "drum:4", "drum:6", "drum:3"};

std::string tmp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("frugal_approx_test_" + name)).string();
}
void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}
/// f(spec) for each base spec, unsigned and with ":signed".
template <class List, class F>
void for_each_signedness(const List& bases, F&& f) {
  for (const char* base : bases)
    for (const char* sfx : {"", ":signed"}) f(std::string(base) + sfx);
}

std::string error_of(const std::string& spec) {
  try {
    make_multiplier(spec);
  } catch (const frugal::Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("decomposition and table reproduce mul() on all 65,536 pairs") {
  for_each_signedness(kFunctional, [](const std::string& spec) {
    CAPTURE(spec);
    auto m = make_multiplier(spec);
    Decomposition d;
    REQUIRE(m->decomposition(d));
    std::vector<int32_t> t = build_table(*m);
    int bad = 0;
    for (int a = m->lo(); a <= m->hi(); ++a)
      for (int b = m->lo(); b <= m->hi(); ++b) {
        int32_t ref = m->mul(a, b);
        bad += d.eval(code(a), code(b)) != ref;
        bad += t[size_t(code(a)) * 256 + code(b)] != ref;
      }
    CHECK(bad == 0);
  });
}

TEST_CASE("bam's narrow form (one term per bit of a) reproduces mul(), each A term spanning at most 128") {
  const char* bams[] = {"bam:0,6", "bam:2,5", "bam:3,0", "bam:0,12", "bam:1,4", "bam:0,0"};
  for_each_signedness(bams, [](const std::string& spec) {
    CAPTURE(spec);
    auto m = make_multiplier(spec);
    Decomposition d;
    REQUIRE(m->decomposition(d));
    REQUIRE(!d.a_narrow.empty());
    CHECK(d.a_narrow.size() == d.b_narrow.size());
    CHECK(d.a_narrow.size() <= 8);
    for (const auto& a : d.a_narrow) {
      const auto [lo, hi] = std::minmax_element(a.begin(), a.end());
      CHECK(std::max<int>(0, *hi) - std::min<int>(0, *lo) <= 128);  // one u8 part on the pre-VNNI layout
    }
    int bad = 0;
    for (int a = m->lo(); a <= m->hi(); ++a)
      for (int b = m->lo(); b <= m->hi(); ++b) bad += d.eval_narrow(code(a), code(b)) != m->mul(a, b);
    CHECK(bad == 0);
  });
  Decomposition d;
  REQUIRE(make_multiplier("mitchell")->decomposition(d));
  CHECK(d.a_narrow.empty());
}

TEST_CASE("known products") {
  CHECK(make_multiplier("exact")->mul(255, 255) == 65025);
  CHECK(make_multiplier("exact:signed")->mul(-3, 5) == -15);
  CHECK(make_multiplier("trunc:2")->mul(7, 7) == 16);
  CHECK(make_multiplier("bam:0,2")->mul(3, 3) == 4);   // only a1*b1 (column 2) survives
  CHECK(make_multiplier("bam:1,0")->mul(3, 3) == 6);   // row b0 dropped: 3*2
  CHECK(make_multiplier("mitchell")->mul(3, 3) == 8);  // carry case 2^(1+1+1)*(0.5+0.5)
  CHECK(make_multiplier("mitchell")->mul(2, 3) == 6);  // powers of two are exact
  CHECK(make_multiplier("mitchell")->mul(0, 200) == 0);
  CHECK(make_multiplier("drum:4")->mul(255, 255) == 240 * 240);  // 1111|1111 -> 1111 (LSB forced 1) << 4
  CHECK(make_multiplier("drum:4")->mul(15, 13) == 195);          // <= K bits: exact
  CHECK(make_multiplier("drum:4")->mul(64, 1) == 72);            // 1000|000 -> 1001 << 3
  CHECK(make_multiplier("drum:4:signed")->mul(-64, 2) == -144);
  CHECK(make_multiplier("mitchell:signed")->mul(-3, -3) == 8);
}

TEST_CASE("spec parsing, names and relative power") {
  CHECK(make_multiplier("drum:4")->name() == "drum:4");
  CHECK(make_multiplier("bam:0,6:signed")->name() == "bam:0,6:signed");
  CHECK(make_multiplier("exact")->relative_power == doctest::Approx(1.0));
  CHECK(make_multiplier("trunc:2")->relative_power == doctest::Approx(0.5625));
  CHECK(make_multiplier("drum:4:power=0.42")->relative_power == doctest::Approx(0.42));
  CHECK(make_multiplier("mitchell:power=0.3:signed")->is_signed);
  CHECK(error_of("drum:9").find("K must be an integer in [2,8]") != std::string::npos);
  CHECK(error_of("booth").find("unknown multiplier 'booth'") != std::string::npos);
  CHECK(error_of("bam:1").find("bam:H,V") != std::string::npos);
  CHECK(error_of("trunc:x").find("got 'x'") != std::string::npos);
  CHECK(error_of("drum:4:power=0").find("power") != std::string::npos);
  CHECK(error_of("exact:3").find("no argument") != std::string::npos);
  CHECK(error_of("lut:/nonexistent/x.bin").find("cannot open") != std::string::npos);
}

TEST_CASE("LUT files: binary and text layouts round-trip") {
  auto ex = make_multiplier("drum:4");
  std::vector<int32_t> t = build_table(*ex);
  std::string bin = tmp_path("drum4.bin");
  write_lut_file(bin, t, false);
  CHECK(std::filesystem::file_size(bin) == 131072);
  auto lut = make_multiplier("lut:" + bin + ":power=0.5");
  CHECK(lut->name() == "lut:" + bin);
  CHECK(lut->relative_power == doctest::Approx(0.5));
  CHECK(build_table(*lut) == t);
  Decomposition d;
  CHECK_FALSE(lut->decomposition(d));

  auto sm = make_multiplier("mitchell:signed");
  std::vector<int32_t> ts = build_table(*sm);
  std::string sbin = tmp_path("mitchell_s.bin");
  write_lut_file(sbin, ts, true);
  auto slut = make_multiplier("lut:" + sbin + ":signed");
  CHECK(slut->mul(-100, 77) == sm->mul(-100, 77));
  CHECK(build_table(*slut) == ts);

  // 256 rows of 256, comma separated, and one number per line
  std::string rows, lines;
  for (int a = 0; a < 256; ++a) {
    for (int b = 0; b < 256; ++b) {
      rows += std::to_string(t[size_t(a) * 256 + b]) + (b < 255 ? "," : "\n");
      lines += std::to_string(t[size_t(a) * 256 + b]) + "\n";
    }
  }
  std::string csv = tmp_path("rows.csv"), txt = tmp_path("lines.txt");
  write_bytes(csv, rows);
  write_bytes(txt, lines);
  CHECK(read_lut_file(csv, false) == t);
  CHECK(read_lut_file(txt, false) == t);
}

TEST_CASE("bad LUT files are rejected with a clear error") {
  auto msg = [](const std::string& path, bool s) -> std::string {
    try {
      read_lut_file(path, s);
    } catch (const frugal::Error& e) {
      return e.what();
    }
    return "";
  };
  std::string trunc = tmp_path("trunc.bin");
  write_bytes(trunc, std::string(1000, '\x01'));
  CHECK(msg(trunc, false).find("truncated: binary data ends at byte offset 1000") != std::string::npos);

  std::string big = tmp_path("big.bin");
  write_bytes(big, std::string(131073, '\x02'));
  CHECK(msg(big, false).find("131073 bytes: too long") != std::string::npos);

  std::string rng = tmp_path("range.csv");
  write_bytes(rng, "1\n2\n70000\n");
  std::string m = msg(rng, false);
  CHECK(m.find("line 3") != std::string::npos);
  CHECK(m.find("out of range [0,65535]") != std::string::npos);
  write_bytes(rng, "-40000\n");
  CHECK(msg(rng, true).find("out of range [-32768,32767]") != std::string::npos);
  write_bytes(rng, "-1\n");
  CHECK(msg(rng, false).find(":signed") != std::string::npos);

  std::string parse = tmp_path("parse.csv");
  write_bytes(parse, "1\n2\n12,--3\n");
  CHECK(msg(parse, false).find("line 3 (byte offset 7): cannot parse '--3'") != std::string::npos);

  std::string count = tmp_path("count.csv");
  write_bytes(count, "1,2,3\n");
  CHECK(msg(count, false).find("line 1 holds 3 numbers") != std::string::npos);
  write_bytes(count, "1\n2\n");
  CHECK(msg(count, false).find("holds 2 numbers; a 256x256 table needs 65,536") != std::string::npos);
}

TEST_CASE("table gradient") {
  auto ex = make_multiplier("exact");
  TableGradient g = table_gradient(*ex);
  CHECK(g.d_da[size_t(code(10)) * 256 + code(7)] == doctest::Approx(7));
  CHECK(g.d_db[size_t(code(10)) * 256 + code(7)] == doctest::Approx(10));
  CHECK(g.d_da[size_t(code(0)) * 256 + code(7)] == doctest::Approx(7));  // one-sided at the edge
  auto exs = make_multiplier("exact:signed");
  TableGradient gs = table_gradient(*exs);
  CHECK(gs.d_da[size_t(code(-128)) * 256 + code(-5)] == doctest::Approx(-5));
  auto tr = make_multiplier("trunc:2");  // step function: slope 0 inside a step, jump at its edge
  TableGradient gt = table_gradient(*tr);
  CHECK(gt.d_da[size_t(code(5)) * 256 + code(8)] == doctest::Approx(0));
  CHECK(gt.d_da[size_t(code(4)) * 256 + code(8)] == doctest::Approx(16));  // (M(5)-M(3))/2 = (32-0)/2
}
