#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include <opencv2/imgcodecs.hpp>

#include "approx/characterize.h"
#include "util/check.h"

using namespace frugal::approx;

TEST_CASE("exact multiplier has zero error") {
  for (const char* s : {"exact", "exact:signed"}) {
    auto j = characterize(*make_multiplier(s));
    for (const char* k : {"mae", "mae_pct", "wce", "wce_pct", "mre_pct", "ep_pct", "bias", "mse", "nmed"})
      CHECK(j[k].get<double>() == 0.0);
  }
}

TEST_CASE("hand-built LUT with one wrong entry") {
  auto ex = make_multiplier("exact");
  std::vector<int32_t> t = build_table(*ex);
  t[2 * 256 + 3] = 7;  // 2*3 = 6, error +1
  auto path = (std::filesystem::temp_directory_path() / "frugal_char_one.bin").string();
  write_lut_file(path, t, false);
  auto j = characterize(*make_multiplier("lut:" + path));
  CHECK(j["mae"].get<double>() == doctest::Approx(1.0 / 65536));
  CHECK(j["wce"].get<int64_t>() == 1);
  CHECK(j["ep_pct"].get<double>() == doctest::Approx(100.0 / 65536));
  CHECK(j["bias"].get<double>() == doctest::Approx(1.0 / 65536));
  CHECK(j["mse"].get<double>() == doctest::Approx(1.0 / 65536));
  CHECK(j["mre_pct"].get<double>() == doctest::Approx(100.0 * (1.0 / 6.0) / (255.0 * 255.0)));
  CHECK(j["nmed"].get<double>() == doctest::Approx(1.0 / 65536 / 65025));
}

TEST_CASE("published MREs of classic designs (unsigned 8x8)") {
  CHECK(characterize(*make_multiplier("mitchell"))["mre_pct"].get<double>() == doctest::Approx(3.79).epsilon(0.02));
  CHECK(characterize(*make_multiplier("drum:4"))["mre_pct"].get<double>() == doctest::Approx(5.89).epsilon(0.02));
  CHECK(characterize(*make_multiplier("drum:6"))["mre_pct"].get<double>() == doctest::Approx(1.30).epsilon(0.03));
  auto mit = characterize(*make_multiplier("mitchell"));
  CHECK(mit["bias"].get<double>() < 0);  // Mitchell never overestimates
  CHECK(mit["wce_pct"].get<double>() == doctest::Approx(6.25).epsilon(0.02));
  // truncated partial products below column 6 (research note §5): MAE 0.12 %, MRE 2.64 %
  auto bam = characterize(*make_multiplier("bam:0,6"));
  CHECK(bam["mae_pct"].get<double>() == doctest::Approx(0.12).epsilon(0.05));
  CHECK(bam["mre_pct"].get<double>() == doctest::Approx(2.64).epsilon(0.02));
}

TEST_CASE("error heat map PNG") {
  auto path = (std::filesystem::temp_directory_path() / "frugal_heat_drum4.png").string();
  write_error_heatmap_png(*make_multiplier("drum:4"), path);
  cv::Mat img = cv::imread(path);
  REQUIRE_FALSE(img.empty());
  CHECK(img.cols >= 256);
  CHECK(img.rows >= 256);
  CHECK_THROWS_AS(write_error_heatmap_png(*make_multiplier("exact"), "/nonexistent_dir/x.png"), frugal::Error);
}
