// attach_approx through the one ApproxHost hook of conv and linear layers, every layer holding the same multiplier.
#include <doctest/doctest.h>

#include "approx/multiplier.h"
#include "io/config.h"
#include "nn/layers.h"
#include "nn/model.h"
#include "train/approx_attach.h"

using namespace frugal;

TEST_CASE("approx attach: conv and linear layers are the ApproxHosts, and every one gets the arithmetic") {
  for (const char* preset : {"lenet5", "resnet20"}) {
    CAPTURE(preset);
    const Dims chw = std::string(preset) == "lenet5" ? Dims{1, 28, 28} : Dims{3, 32, 32};
    nn::Model m(nn::preset_spec(preset, 0.5, -1, chw, 10), 3);
    io::Config c;
    c.set("multiplier=drum:4:power=0.42");
    c.set("approx_mode=functional");
    const nlohmann::json info = train::attach_approx(m, c);
    int hosts = 0, conv_linear = 0;
    m.net().visit({1, chw[0], chw[1], chw[2]}, [&](nn::Layer& l, const Dims&) {
      const std::string name = l.name();
      const bool is_conv_linear = name.rfind("conv2d(", 0) == 0 || name.rfind("linear(", 0) == 0;
      conv_linear += is_conv_linear;
      nn::ApproxHost* h = l.approx_host();
      CHECK((h != nullptr) == is_conv_linear);
      if (!h) return;
      ++hosts;
      REQUIRE(h->approx() != nullptr);
      CHECK(h->approx()->relative_power() == doctest::Approx(0.42));  // the shared multiplier's, not re-parsed
      CHECK(h->approx()->bits() == std::pair<int, int>{8, 8});
      const nn::ApproxHost::Geometry g = h->approx_geometry();
      CHECK(g.conv == (name.rfind("conv2d(", 0) == 0));
      CHECK(h->approx_weight().value.size() == int64_t(g.out) * (g.in / g.groups) * g.kernel * g.kernel);
    });
    CHECK(hosts > 0);
    CHECK(hosts == conv_linear);
    CHECK(info["layers"].size() == size_t(hosts));
  }
}

TEST_CASE("approx attach: approx_layers picks the hosts by index, the rest stay fp32") {
  nn::Model m(nn::preset_spec("lenet5", 0.5, -1, {1, 28, 28}, 10), 3);
  io::Config c;
  c.set("multiplier=mitchell");
  c.set("approx_layers=1,2");
  const nlohmann::json info = train::attach_approx(m, c);
  std::vector<bool> attached;
  m.net().visit({1, 1, 28, 28}, [&](nn::Layer& l, const Dims&) {
    if (nn::ApproxHost* h = l.approx_host()) attached.push_back(h->approx() != nullptr);
  });
  REQUIRE(attached.size() >= 3);
  for (size_t i = 0; i < attached.size(); ++i) {
    CAPTURE(i);
    CHECK(attached[i] == (i == 1 || i == 2));
    CHECK(info["layers"][i]["arithmetic"].get<std::string>() == (attached[i] ? "mitchell/w8a8" : "fp32"));
  }
}
