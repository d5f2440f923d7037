// Readers for IDX (MNIST, Fashion-MNIST), CIFAR-10/100 binary, and image folders; dataset lookup.
#include "data/dataset.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "util/check.h"

// OpenCV 4.6 headers trip C++20's enum-arithmetic deprecation; keep -Werror builds clean.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-enum-enum-conversion"
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#pragma GCC diagnostic pop

namespace fs = std::filesystem;

namespace frugal::data {
namespace {

/// A file's bytes as on disk plus its checksum.
struct RawFile {
  std::vector<uint8_t> bytes;  // (file size)
  FileChecksum checksum;
};

RawFile read_raw(const std::string& path, const std::string& hint) {
  std::error_code ec;
  FRUGAL_CHECK(fs::is_regular_file(path, ec), "file not found: '", path, "'. ", hint);
  std::ifstream in(path, std::ios::binary);
  FRUGAL_CHECK(in.good(), "cannot open '", path, "' for reading (permissions?). ", hint);
  RawFile r;
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  in.seekg(0, std::ios::beg);
  r.bytes.resize(size_t(size));
  in.read(reinterpret_cast<char*>(r.bytes.data()), size);
  FRUGAL_CHECK(in.gcount() == size, "read error in '", path, "': got ", in.gcount(), " of ", size, " bytes");
  r.checksum = {path, sha256_bytes(r.bytes.data(), r.bytes.size()), uint64_t(size)};
  return r;
}

bool is_gzip(const std::vector<uint8_t>& b) { return b.size() >= 2 && b[0] == 0x1f && b[1] == 0x8b; }

/// Decompresses every gzip member of `in` (as gzip -d does).
std::vector<uint8_t> gunzip(const std::vector<uint8_t>& in, const std::string& path) {
  std::vector<uint8_t> out;  // (decompressed size)
  out.reserve(in.size() * 4);
  z_stream zs{};
  FRUGAL_CHECK(inflateInit2(&zs, 16 + MAX_WBITS) == Z_OK, "zlib inflateInit2 failed for '", path, "'");
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = uInt(in.size());
  std::array<uint8_t, 1 << 16> chunk;
  int rc = Z_OK;
  for (;;) {
    zs.next_out = chunk.data();
    zs.avail_out = uInt(chunk.size());
    rc = inflate(&zs, Z_NO_FLUSH);
    out.insert(out.end(), chunk.data(), chunk.data() + (chunk.size() - zs.avail_out));
    if (rc == Z_STREAM_END) {
      if (zs.avail_in == 0) break;
      inflateReset(&zs);  // next gzip member
      continue;
    }
    if (rc != Z_OK) break;
    if (zs.avail_in == 0 && zs.avail_out != 0) { rc = Z_BUF_ERROR; break; }
  }
  size_t consumed = in.size() - zs.avail_in;
  std::string msg = zs.msg ? zs.msg : "";
  inflateEnd(&zs);
  FRUGAL_CHECK(rc == Z_STREAM_END, "gzip file '", path, "' is damaged or truncated at compressed byte offset ",
               consumed, " of ", in.size(), (msg.empty() ? "" : " (zlib: " + msg + ")"),
               "; delete it and fetch it again (datasets/fetch_*.sh)");
  return out;
}

uint32_t be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

std::string hex32(uint32_t v) {
  char s[16];
  std::snprintf(s, sizeof s, "0x%08x", v);
  return s;
}

/// Reads a plain or gzipped IDX file, checks magic and exact size; returns the payload after the header.
struct IdxFile {
  std::vector<uint8_t> data;  // whole decompressed file
  std::vector<uint32_t> dims;
  size_t header = 0;
  FileChecksum checksum;
};

IdxFile read_idx(const std::string& path, uint32_t magic, int ndims, const char* what) {
  IdxFile f;
  RawFile raw = read_raw(path, "Fetch the dataset again (see datasets/README.md).");
  f.checksum = raw.checksum;
  bool gz = is_gzip(raw.bytes);
  f.data = gz ? gunzip(raw.bytes, path) : std::move(raw.bytes);
  const char* where = gz ? " (offsets are in the decompressed stream)" : "";
  f.header = 4 + 4 * size_t(ndims);
  FRUGAL_CHECK(f.data.size() >= 4, "IDX ", what, " file '", path, "' is truncated: ", f.data.size(),
               " bytes, too short for the 4-byte magic number", where, "; fetch it again");
  uint32_t found = be32(f.data.data());
  FRUGAL_CHECK(found == magic, "IDX ", what, " file '", path, "': wrong magic number at byte offset 0: expected ",
               hex32(magic), ", found ", hex32(found), where,
               ". Is this the right file (images vs labels swapped? not an IDX file?)");
  FRUGAL_CHECK(f.data.size() >= f.header, "IDX ", what, " file '", path, "' is truncated: ", f.data.size(),
               " bytes, the header alone needs ", f.header, where, "; fetch it again");
  size_t payload = 1;
  for (int i = 0; i < ndims; ++i) {
    f.dims.push_back(be32(f.data.data() + 4 + 4 * i));
    payload *= f.dims.back();
  }
  size_t expected = f.header + payload;
  FRUGAL_CHECK(f.data.size() >= expected, "IDX ", what, " file '", path, "' is truncated: header promises ",
               expected, " bytes, file has ", f.data.size(), where, "; delete it and fetch it again");
  FRUGAL_CHECK(f.data.size() == expected, "IDX ", what, " file '", path, "' has ", f.data.size() - expected,
               " unexpected trailing bytes after byte offset ", expected, where, "; the file is not a valid IDX file");
  return f;
}

void check_labels(const Dataset& ds, const std::string& path, size_t first_byte, size_t stride) {
  for (size_t i = 0; i < ds.labels.size(); ++i)
    FRUGAL_CHECK(ds.labels[i] >= 0 && ds.labels[i] < ds.num_classes, "label out of range in '", path,
                 "': record ", i, " (byte offset ", first_byte + i * stride, ") has label ", ds.labels[i],
                 ", expected 0..", ds.num_classes - 1, ". The file is damaged or belongs to another dataset");
}

std::vector<std::string> read_names(const std::string& path) {
  std::vector<std::string> names;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  return names;
}

/// Appends CIFAR records (label bytes then 3072 CHW pixels) from one file to ds, converting to HWC.
/// label_limits: (label_bytes) exclusive upper bound of each label byte; label_index: the one kept.
void read_cifar_file(Dataset& ds, const std::string& path, const std::vector<int>& label_limits, int label_index) {
  const int label_bytes = int(label_limits.size());
  constexpr size_t kPixels = 32 * 32 * 3;
  const size_t record = size_t(label_bytes) + kPixels;
  RawFile raw = read_raw(path, "Fetch it with bash datasets/fetch_cifar" + std::string(label_bytes == 1 ? "10" : "100") +
                                   ".sh or point FRUGAL_DATA at a directory that holds it.");
  const auto& b = raw.bytes;
  FRUGAL_CHECK(!b.empty() && b.size() % record == 0, "CIFAR file '", path, "' has ", b.size(),
               " bytes, not a positive multiple of the record size ", record, " (", label_bytes,
               " label byte(s) + 3072 pixels); ", b.size() / record, " whole records then ", b.size() % record,
               " stray bytes at byte offset ", (b.size() / record) * record,
               ". The file is truncated or not a CIFAR binary file; fetch it again");
  size_t n = b.size() / record, base = ds.labels.size();
  ds.labels.resize(base + n);
  ds.images.resize((base + n) * kPixels);
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* rec = b.data() + i * record;
    for (int j = 0; j < label_bytes; ++j)
      FRUGAL_CHECK(rec[j] < label_limits[j], "label out of range in '", path, "': record ", i, " (byte offset ",
                   i * record + size_t(j), ") has ", (label_bytes == 2 ? (j == 0 ? "coarse " : "fine ") : ""),
                   "label ", int(rec[j]), ", expected 0..", label_limits[j] - 1, ". The file is damaged or is not a ",
                   ds.name, " file");
    ds.labels[base + i] = rec[label_index];
    const uint8_t* chw = rec + label_bytes;          // (3, 32, 32)
    uint8_t* hwc = ds.images.data() + (base + i) * kPixels;  // (32, 32, 3)
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 1024; ++p) hwc[p * 3 + c] = chw[c * 1024 + p];
  }
  ds.files.push_back(raw.checksum);
}

std::string join(const std::string& a, const std::string& b) { return (fs::path(a) / b).string(); }

/// First existing file among dir/stem and dir/stem.gz, or "".
std::string find_plain_or_gz(const std::string& dir, const std::string& stem) {
  std::error_code ec;
  for (const std::string& cand : {join(dir, stem), join(dir, stem + ".gz")})
    if (fs::is_regular_file(cand, ec)) return cand;
  return "";
}

std::string fetch_script(const std::string& name) {
  if (name == "mnist") return "bash datasets/fetch_mnist.sh";
  if (name == "fashion-mnist") return "bash datasets/fetch_fashion_mnist.sh (or apt-get install dataset-fashion-mnist)";
  if (name == "cifar10") return "bash datasets/fetch_cifar10.sh";
  return "bash datasets/fetch_cifar100.sh (needs internet)";
}

[[noreturn]] void fail_missing(const std::string& name, const std::string& sub, const std::vector<std::string>& looked) {
  std::ostringstream os;
  os << "dataset '" << name << "' not found. Looked in:";
  for (const auto& d : looked) os << "\n  " << d;
  if (looked.empty()) os << "\n  (no data roots: pass --data-dir or set FRUGAL_DATA)";
  os << "\nFetch it with: " << fetch_script(name) << "  (run from the repository root; writes datasets/data/" << sub
     << "), or set FRUGAL_DATA / --data-dir to a directory that contains " << sub << "/";
  FRUGAL_FAIL(os.str());
}

DataSplit load_idx_dataset(const std::string& name, const std::vector<std::string>& roots, int num_classes) {
  static const char* stems[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                                 "t10k-labels-idx1-ubyte"};
  std::vector<std::string> dirs;
  for (const auto& r : roots) dirs.push_back(join(r, name));
  if (name == "fashion-mnist") dirs.push_back("/usr/share/datasets/fashion-mnist");
  for (const auto& d : dirs) {
    std::array<std::string, 4> found;
    int n_found = 0;
    for (int i = 0; i < 4; ++i) n_found += !(found[i] = find_plain_or_gz(d, stems[i])).empty();
    if (n_found == 0) continue;
    if (n_found < 4) {
      std::string missing;
      for (int i = 0; i < 4; ++i)
        if (found[i].empty()) missing += std::string(" ") + stems[i] + "[.gz]";
      FRUGAL_FAIL("dataset '", name, "' is incomplete in '", d, "': missing", missing, ". Fetch it again with ",
                  fetch_script(name));
    }
    DataSplit s{load_idx(found[0], found[1], num_classes, name), load_idx(found[2], found[3], num_classes, name),
                fs::path(d).parent_path().string()};
    return s;
  }
  fail_missing(name, name, dirs);
}

/// "HxWxC" -> true and fills h, w, c.
bool parse_hwc(const std::string& s, int& h, int& w, int& c) {
  char x1 = 0, x2 = 0;
  std::istringstream is(s);
  if (!(is >> h >> x1 >> w >> x2 >> c) || x1 != 'x' || x2 != 'x') return false;
  return is.peek() == std::char_traits<char>::eof() && h > 0 && w > 0 && (c == 1 || c == 3);
}

}  // namespace

Dataset load_idx(const std::string& images_path, const std::string& labels_path, int num_classes,
                 const std::string& name) {
  FRUGAL_CHECK(num_classes > 0 && num_classes <= 256, "load_idx: num_classes must be in 1..256, got ", num_classes);
  IdxFile im = read_idx(images_path, 0x00000803, 3, "images");
  IdxFile lb = read_idx(labels_path, 0x00000801, 1, "labels");
  FRUGAL_CHECK(im.dims[0] == lb.dims[0], "image/label count mismatch: '", images_path, "' has ", im.dims[0],
               " images but '", labels_path, "' has ", lb.dims[0], " labels; the two files are from different "
               "datasets or splits (train vs t10k?)");
  Dataset ds;
  ds.name = name;
  ds.channels = 1;
  ds.height = int(im.dims[1]);
  ds.width = int(im.dims[2]);
  ds.num_classes = num_classes;
  ds.images.assign(im.data.begin() + std::ptrdiff_t(im.header), im.data.end());  // (N, H, W, 1)
  ds.labels.assign(lb.data.begin() + std::ptrdiff_t(lb.header), lb.data.end());  // (N)
  check_labels(ds, labels_path, lb.header, 1);
  ds.files = {im.checksum, lb.checksum};
  return ds;
}

Dataset load_cifar10(const std::string& dir, bool train) {
  Dataset ds;
  ds.name = "cifar10";
  ds.channels = 3, ds.height = 32, ds.width = 32, ds.num_classes = 10;
  if (train)
    for (int i = 1; i <= 5; ++i) read_cifar_file(ds, join(dir, "data_batch_" + std::to_string(i) + ".bin"), {10}, 0);
  else
    read_cifar_file(ds, join(dir, "test_batch.bin"), {10}, 0);
  ds.class_names = read_names(join(dir, "batches.meta.txt"));
  if (ds.class_names.size() != 10)
    ds.class_names = {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
  return ds;
}

Dataset load_cifar100(const std::string& dir, bool train, bool fine_labels) {
  Dataset ds;
  ds.name = "cifar100";
  ds.channels = 3, ds.height = 32, ds.width = 32;
  ds.num_classes = fine_labels ? 100 : 20;
  read_cifar_file(ds, join(dir, train ? "train.bin" : "test.bin"), {20, 100}, fine_labels ? 1 : 0);
  auto names = read_names(join(dir, fine_labels ? "fine_label_names.txt" : "coarse_label_names.txt"));
  if (int(names.size()) == ds.num_classes) ds.class_names = names;
  return ds;
}

Dataset load_image_folder(const std::string& dir, int height, int width, int channels,
                          const std::vector<std::string>& expected_classes) {
  std::error_code ec;
  FRUGAL_CHECK(fs::is_directory(dir, ec), "image folder '", dir, "' does not exist or is not a directory; "
               "expected one sub-folder per class (", dir, "/<class>/<image>.png)");
  FRUGAL_CHECK(channels <= 0 || channels == 1 || channels == 3, "image folder '", dir,
               "': channels must be 1 or 3, got ", channels);
  Dataset ds;
  ds.name = "folder";
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory()) ds.class_names.push_back(e.path().filename().string());
  std::sort(ds.class_names.begin(), ds.class_names.end());
  FRUGAL_CHECK(!ds.class_names.empty(), "image folder '", dir, "' has no sub-folders; put each class's images in "
               "its own sub-folder (", dir, "/<class>/<image>.png)");
  if (!expected_classes.empty()) {
    std::string a, b;
    for (const auto& c : ds.class_names) a += " " + c;
    for (const auto& c : expected_classes) b += " " + c;
    FRUGAL_CHECK(ds.class_names == expected_classes, "image folder '", dir, "' has classes [", a,
                 " ] but the train split has [", b, " ]; the two splits need the same class sub-folders");
  }
  ds.num_classes = int(ds.class_names.size());
  static const std::vector<std::string> exts = {".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm",
                                                ".pbm", ".tif", ".tiff", ".webp"};
  for (int k = 0; k < ds.num_classes; ++k) {
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(join(dir, ds.class_names[k]))) {
      std::string ext = e.path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
      if (e.is_regular_file() && std::find(exts.begin(), exts.end(), ext) != exts.end())
        files.push_back(e.path().string());
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      cv::Mat img = cv::imread(f, cv::IMREAD_UNCHANGED);
      FRUGAL_CHECK(!img.empty(), "cannot decode image '", f, "' (record ", ds.labels.size(),
                   "); the file is damaged or not an image: delete or replace it");
      if (img.depth() != CV_8U) {  // 16-bit PNG/TIFF: scale to 8 bits
        cv::Mat tmp;
        img.convertTo(tmp, CV_8U, img.depth() == CV_16U ? 1.0 / 257.0 : 255.0);
        img = tmp;
      }
      if (ds.labels.empty()) {  // the first image fixes unspecified dimensions
        ds.channels = channels > 0 ? channels : (img.channels() == 1 ? 1 : 3);
        ds.height = height > 0 ? height : img.rows;
        ds.width = width > 0 ? width : img.cols;
      }
      cv::Mat conv;  // (rows, cols, ds.channels), RGB order
      if (ds.channels == 1) {
        if (img.channels() == 1) conv = img;
        else cv::cvtColor(img, conv, img.channels() == 4 ? cv::COLOR_BGRA2GRAY : cv::COLOR_BGR2GRAY);
      } else {
        if (img.channels() == 1) cv::cvtColor(img, conv, cv::COLOR_GRAY2RGB);
        else cv::cvtColor(img, conv, img.channels() == 4 ? cv::COLOR_BGRA2RGB : cv::COLOR_BGR2RGB);
      }
      cv::Mat sized;
      if (conv.rows == ds.height && conv.cols == ds.width) sized = conv;
      else {
        bool shrink = conv.rows > ds.height || conv.cols > ds.width;
        cv::resize(conv, sized, cv::Size(ds.width, ds.height), 0, 0, shrink ? cv::INTER_AREA : cv::INTER_LINEAR);
      }
      if (!sized.isContinuous()) sized = sized.clone();
      ds.images.insert(ds.images.end(), sized.data, sized.data + ds.image_bytes());
      ds.labels.push_back(k);
      RawFile raw = read_raw(f, "");
      ds.files.push_back(raw.checksum);
    }
  }
  FRUGAL_CHECK(!ds.labels.empty(), "image folder '", dir, "' has class sub-folders but no images in them "
               "(accepted: png jpg jpeg bmp pgm ppm pbm tif tiff webp)");
  return ds;
}

std::vector<std::string> data_roots(const std::string& cli_dir) {
  std::vector<std::string> roots;
  if (!cli_dir.empty()) roots.push_back(cli_dir);
  if (const char* env = std::getenv("FRUGAL_DATA")) {
    std::string s(env);
    size_t start = 0;
    while (start <= s.size()) {
      size_t end = s.find(':', start);
      if (end == std::string::npos) end = s.size();
      if (end > start) roots.push_back(s.substr(start, end - start));
      start = end + 1;
    }
  }
#ifdef FRUGAL_SOURCE_DIR
  roots.push_back(join(FRUGAL_SOURCE_DIR, "datasets/data"));
#endif
  return roots;
}

DataSplit load_dataset(const std::string& name, const std::vector<std::string>& roots) {
  if (name == "mnist") {
    DataSplit s = load_idx_dataset(name, roots, 10);
    for (Dataset* d : {&s.train, &s.test}) d->class_names = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
    return s;
  }
  if (name == "fashion-mnist") {
    DataSplit s = load_idx_dataset(name, roots, 10);
    for (Dataset* d : {&s.train, &s.test})
      d->class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                        "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
    return s;
  }
  std::error_code ec;
  if (name == "cifar10" || name == "cifar100") {
    const bool c10 = name == "cifar10";
    const std::string sub = c10 ? "cifar-10-batches-bin" : "cifar-100-binary";
    const std::string probe = c10 ? "test_batch.bin" : "test.bin";
    std::vector<std::string> looked;
    for (const auto& r : roots) {
      std::string d = join(r, sub);
      looked.push_back(d);
      if (!fs::is_regular_file(join(d, probe), ec)) continue;
      if (c10) return {load_cifar10(d, true), load_cifar10(d, false), r};
      return {load_cifar100(d, true), load_cifar100(d, false), r};
    }
    fail_missing(name, sub, looked);
  }
  if (name.rfind("folder:", 0) == 0) {
    std::string path = name.substr(7);
    int h = 0, w = 0, c = 0;
    size_t colon = path.rfind(':');
    if (colon != std::string::npos && parse_hwc(path.substr(colon + 1), h, w, c)) path = path.substr(0, colon);
    FRUGAL_CHECK(!path.empty(), "dataset '", name, "': expected folder:PATH or folder:PATH:HxWxC (e.g. folder:pets:64x64x3)");
    std::vector<std::string> looked{path};
    std::string base, root;
    if (fs::is_directory(join(path, "train"), ec)) {
      base = path;
      root = fs::absolute(path, ec).lexically_normal().parent_path().string();
    } else if (fs::path(path).is_relative())
      for (const auto& r : roots) {
        looked.push_back(join(r, path));
        if (fs::is_directory(join(join(r, path), "train"), ec)) { base = join(r, path); root = r; break; }
      }
    if (base.empty()) {
      std::ostringstream os;
      for (const auto& d : looked) os << "\n  " << d << "/train";
      FRUGAL_FAIL("image folder dataset '", path, "' not found. Looked for:", os.str(),
                  "\nExpected PATH/train/<class>/<image> and PATH/test/<class>/<image>");
    }
    DataSplit s;
    s.root = root;
    s.train = load_image_folder(join(base, "train"), h, w, c);
    s.test = load_image_folder(join(base, "test"), s.train.height, s.train.width, s.train.channels, s.train.class_names);
    return s;
  }
  FRUGAL_FAIL("unknown dataset '", name, "'; expected one of: mnist, fashion-mnist, cifar10, cifar100, folder:PATH, "
              "folder:PATH:HxWxC");
}

DataFiles data_files(const DataSplit& split) {
  std::error_code ec;
  DataFiles out;
  fs::path root;
  if (!split.root.empty()) {
    root = fs::absolute(split.root, ec).lexically_normal();
    if (root.has_relative_path() && root.filename().empty()) root = root.parent_path();  // "dir/" -> "dir"
    out.root = root.string();
  }
  for (const Dataset* d : {&split.train, &split.test})
    for (FileChecksum f : d->files) {
      fs::path abs = fs::absolute(f.path, ec).lexically_normal();
      fs::path rel = root.empty() ? fs::path() : abs.lexically_relative(root);
      bool inside = !rel.empty() && *rel.begin() != "..";
      f.path = inside ? rel.generic_string() : abs.string();
      out.files.push_back(std::move(f));
    }
  return out;
}

std::vector<size_t> label_histogram(const Dataset& ds) {
  std::vector<size_t> h(size_t(std::max(ds.num_classes, 0)), 0);  // (num_classes)
  for (int32_t l : ds.labels)
    if (l >= 0 && l < ds.num_classes) ++h[size_t(l)];
  return h;
}

}  // namespace frugal::data
