#include "approx/quantizer.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "util/check.h"

namespace frugal::approx {

QuantParams make_quant_params(const QuantConfig& cfg, const float* lo, const float* hi, int64_t channels,
                              int64_t inner) {
  FRUGAL_CHECK(cfg.bits >= 2 && cfg.bits <= 16, "quantizer bits must be in [2,16], got ", cfg.bits);
  FRUGAL_CHECK(channels >= 1 && inner >= 1, "quantizer: channels and inner must be >= 1, got ", channels, ", ", inner);
  QuantParams p;
  p.bits = cfg.bits;
  p.channels = channels;
  p.inner = inner;
  if (cfg.is_signed) {
    p.qmax = (1 << (cfg.bits - 1)) - 1;
    p.qmin = cfg.symmetric ? -p.qmax : -(1 << (cfg.bits - 1));
  } else {
    p.qmin = 0;
    p.qmax = (1 << cfg.bits) - 1;
  }
  p.scale.resize(size_t(channels));
  p.zero_point.resize(size_t(channels));
  for (int64_t c = 0; c < channels; ++c) {
    FRUGAL_CHECK(std::isfinite(lo[c]) && std::isfinite(hi[c]) && lo[c] <= hi[c], "quantizer: channel ", c,
                 " has an invalid range [", lo[c], ",", hi[c], "] (NaN/Inf in the data?)");
    double l = std::min(0.0, double(lo[c])), h = std::max(0.0, double(hi[c]));
    double s;
    int32_t zp = 0;
    if (cfg.symmetric) {
      double m = cfg.is_signed ? std::max(-l, h) : h;
      s = m / p.qmax;
    } else {
      s = (h - l) / double(p.qmax - p.qmin);
      if (s > 0) zp = int32_t(std::clamp<double>(std::nearbyint(p.qmin - l / s), p.qmin, p.qmax));
      else zp = cfg.is_signed ? 0 : 0;
    }
    if (!(s > 0)) s = 1.0;  // all-zero channel: any scale represents it exactly
    p.scale[size_t(c)] = float(s);
    p.zero_point[size_t(c)] = zp;
  }
  return p;
}

Calibrator::Calibrator(const QuantConfig& cfg, int64_t channels, int64_t inner)
    : cfg_(cfg), channels_(cfg.per_channel ? channels : 1), inner_(cfg.per_channel ? inner : 1) {
  FRUGAL_CHECK(channels >= 1 && inner >= 1, "calibrator: channels and inner must be >= 1");
  FRUGAL_CHECK(cfg.percentile > 50 && cfg.percentile <= 100, "calibrator: percentile must be in (50,100], got ",
               cfg.percentile);
  lo_.assign(size_t(channels_), std::numeric_limits<double>::infinity());
  hi_.assign(size_t(channels_), -std::numeric_limits<double>::infinity());
}

void Calibrator::observe(const float* x, size_t n) {
  FRUGAL_CHECK(n > 0, "calibrator: empty batch");
  FRUGAL_CHECK(channels_ == 1 || n % size_t(channels_ * inner_) == 0, "calibrator: batch of ", n,
               " values is not a multiple of channels*inner = ", channels_ * inner_);
  std::vector<std::vector<float>> vals(static_cast<size_t>(channels_));
  for (auto& v : vals) v.reserve(n / size_t(channels_));
  for (size_t i = 0; i < n; ++i) {
    FRUGAL_CHECK(std::isfinite(x[i]), "calibrator: value ", i, " of the batch is ", x[i], "; fix NaN/Inf upstream");
    size_t c = channels_ == 1 ? 0 : size_t((int64_t(i) / inner_) % channels_);
    vals[c].push_back(x[i]);
  }
  for (size_t c = 0; c < vals.size(); ++c) {
    auto& v = vals[c];
    double l, h;
    if (cfg_.calibration == Calibration::minmax) {
      auto [mn, mx] = std::minmax_element(v.begin(), v.end());
      l = *mn, h = *mx;
      lo_[c] = std::min(lo_[c], l);
      hi_[c] = std::max(hi_[c], h);
    } else {
      auto pick = [&](double q) {
        size_t k = size_t(std::clamp(q / 100.0 * double(v.size() - 1), 0.0, double(v.size() - 1)));
        std::nth_element(v.begin(), v.begin() + long(k), v.end());
        return double(v[k]);
      };
      l = pick(100.0 - cfg_.percentile);
      h = pick(cfg_.percentile);
      // running mean of per-batch percentiles
      if (batches_ == 0) lo_[c] = l, hi_[c] = h;
      else lo_[c] += (l - lo_[c]) / (batches_ + 1), hi_[c] += (h - hi_[c]) / (batches_ + 1);
    }
  }
  ++batches_;
}

QuantParams Calibrator::params() const {
  FRUGAL_CHECK(batches_ > 0, "calibrator: params() before any observe(); feed at least one batch");
  std::vector<float> lo(lo_.begin(), lo_.end()), hi(hi_.begin(), hi_.end());
  return make_quant_params(cfg_, lo.data(), hi.data(), channels_, inner_);
}

void quantize(const float* src, size_t n, const QuantParams& p, int32_t* dst) {
  for (size_t i = 0; i < n; ++i) {
    size_t c = p.channel_of(i);
    float q = std::nearbyint(src[i] / p.scale[c]) + float(p.zero_point[c]);
    dst[i] = int32_t(std::clamp(q, float(p.qmin), float(p.qmax)));
  }
}

void dequantize(const int32_t* src, size_t n, const QuantParams& p, float* dst) {
  for (size_t i = 0; i < n; ++i) {
    size_t c = p.channel_of(i);
    dst[i] = float(src[i] - p.zero_point[c]) * p.scale[c];
  }
}

void fake_quant_forward(const float* src, size_t n, const QuantParams& p, float* dst, uint8_t* mask) {
  for (size_t i = 0; i < n; ++i) {
    size_t c = p.channel_of(i);
    float q = std::nearbyint(src[i] / p.scale[c]) + float(p.zero_point[c]);
    bool inside = q >= float(p.qmin) && q <= float(p.qmax);
    if (mask) mask[i] = inside ? 1 : 0;
    q = std::clamp(q, float(p.qmin), float(p.qmax));
    dst[i] = (q - float(p.zero_point[c])) * p.scale[c];
  }
}

void fake_quant_backward(const float* diff_dst, const uint8_t* mask, size_t n, float* diff_src) {
  for (size_t i = 0; i < n; ++i) diff_src[i] = mask[i] ? diff_dst[i] : 0.0f;
}

}  // namespace frugal::approx
