#include "modelcomp/deep_compression.h"

#include <cmath>

#include "io/files.h"
#include "modelcomp/kmeans.h"
#include "modelcomp/prune.h"
#include "util/check.h"

namespace frugal::modelcomp {

namespace {
/// Sparse + shared encoding of one tensor: prune, k-means on the kept weights into 2^bits - 1 centroids after 0.
PackedTensor sparse_shared(const std::string& name, const Tensor& t, double sparsity, int bits, int index_bits) {
  const size_t n = size_t(t.size());
  const float* x = t.data();
  const std::vector<uint8_t> keep = magnitude_mask(x, n, sparsity);
  std::vector<float> kept;
  for (size_t i = 0; i < n; ++i)
    if (keep[i]) kept.push_back(x[i]);
  PackedTensor p;
  p.name = name;
  p.dims = t.dims();
  p.encoding = Encoding::sparse;
  p.index_bits = index_bits;
  p.centroids = {0.0f};
  p.codes.assign(n, 0);
  if (kept.empty()) return p;
  const int k = std::max(1, std::min<int>((1 << bits) - 1, int(kept.size())));
  Codebook cb = kmeans_1d(kept.data(), kept.size(), k);
  p.centroids.insert(p.centroids.end(), cb.centroids.begin(), cb.centroids.end());
  size_t j = 0;
  for (size_t i = 0; i < n; ++i)
    if (keep[i]) p.codes[i] = cb.assignment[j++] + 1;
  // a kept weight whose centroid rounds to exactly 0.0 would read as pruned: harmless (its value is 0 either way)
  return p;
}
}  // namespace

DeepCompressionResult deep_compress(const io::TensorFile& model, const DeepCompressionOptions& o) {
  FRUGAL_CHECK(o.sparsity >= 0 && o.sparsity < 1, "compress: sparsity must be in [0, 1), got ", o.sparsity);
  for (int b : {o.conv_bits, o.fc_bits})
    FRUGAL_CHECK(b >= 1 && b <= 16, "compress: weight bits must be in [1, 16], got ", b);
  DeepCompressionResult r;
  r.packed.meta = model.meta;
  r.packed.meta["kind"] = "packed-model";
  for (const auto& [name, t] : model.tensors) {
    const size_t n = size_t(t.size());
    const bool conv = t.dims().size() == 4, fc = t.dims().size() == 2;  // as compressible() below
    LayerReport lr;
    lr.name = name;
    lr.dims = t.dims();
    lr.fp32_bytes = 4 * n;
    r.fp32_bytes += lr.fp32_bytes;
    if ((conv || fc) && n >= o.min_numel) {
      const int bits = conv ? o.conv_bits : o.fc_bits;
      r.packed.tensors.push_back(sparse_shared(name, t, o.sparsity, bits, conv ? o.conv_index_bits : o.fc_index_bits));
      lr.encoding = "sparse";
      lr.bits = bits;
      size_t zeros = 0;
      for (uint32_t c : r.packed.tensors.back().codes) zeros += c == 0;
      lr.sparsity = double(zeros) / double(n);
    } else {
      PackedTensor p;
      p.name = name;
      p.dims = t.dims();
      p.encoding = Encoding::dense;
      p.dense.assign(t.data(), t.data() + n);
      r.packed.tensors.push_back(std::move(p));
      lr.encoding = "dense";
    }
    r.layers.push_back(lr);
  }
  r.bytes = encode_packed(r.packed);
  for (size_t i = 0; i < r.layers.size(); ++i) r.layers[i].packed_bytes = r.bytes.record_bytes[i];
  return r;
}

io::TensorFile read_model_file(const std::string& path) {
  const std::string bytes = io::read_file(path);
  if (!is_packed(bytes)) return io::decode_tensor_file(bytes, path);
  UnpackedModel u = decode_packed(bytes, path);
  io::TensorFile f;
  f.meta = u.meta;
  f.tensors = std::move(u.tensors);
  return f;
}

}  // namespace frugal::modelcomp

namespace frugal::modelcomp {

void apply_constraint(const WeightConstraint& c, float* w, size_t n) {
  if (!c.keep.empty()) {
    FRUGAL_CHECK(c.keep.size() == n, "constraint: mask of ", c.keep.size(), " for ", n, " weights");
    for (size_t i = 0; i < n; ++i)
      if (!c.keep[i]) w[i] = 0.0f;
  }
  if (!c.cluster.empty()) {
    FRUGAL_CHECK(c.cluster.size() == n, "constraint: clusters of ", c.cluster.size(), " for ", n, " weights");
    std::vector<double> sum(c.clusters, 0.0);
    std::vector<size_t> cnt(c.clusters, 0);
    for (size_t i = 0; i < n; ++i) {
      sum[c.cluster[i]] += w[i];
      ++cnt[c.cluster[i]];
    }
    for (size_t i = 0; i < n; ++i) {
      const uint32_t k = c.cluster[i];
      w[i] = k == 0 ? 0.0f : float(sum[k] / double(cnt[k]));
    }
  }
}

bool compressible(const Tensor& t, const DeepCompressionOptions& o) {
  return (t.dims().size() == 4 || t.dims().size() == 2) && size_t(t.size()) >= o.min_numel;
}

std::vector<std::pair<std::string, WeightConstraint>> pruning_constraints(const io::TensorFile& model,
                                                                          const DeepCompressionOptions& o) {
  std::vector<std::pair<std::string, WeightConstraint>> out;
  for (const auto& [name, t] : model.tensors)
    if (compressible(t, o)) {
      WeightConstraint c;
      c.keep = magnitude_mask(t.data(), size_t(t.size()), o.sparsity);
      out.emplace_back(name, std::move(c));
    }
  return out;
}

std::vector<std::pair<std::string, WeightConstraint>> sharing_constraints(const DeepCompressionResult& r) {
  std::vector<std::pair<std::string, WeightConstraint>> out;
  for (const PackedTensor& p : r.packed.tensors)
    if (p.encoding == Encoding::sparse) {
      WeightConstraint c;
      c.cluster = p.codes;
      c.clusters = uint32_t(p.centroids.size());
      out.emplace_back(p.name, std::move(c));
    }
  return out;
}

}  // namespace frugal::modelcomp
