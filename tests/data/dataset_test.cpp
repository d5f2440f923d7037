#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>

#include "data/dataset.h"
#include "fixtures.h"
#include "util/check.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-enum-enum-conversion"
#include <opencv2/imgcodecs.hpp>
#pragma GCC diagnostic pop

using namespace frugal::data;
using frugal::Error;
using doctest::Contains;
namespace t = frugal::data::testing;

TEST_CASE("load_idx reads plain and gzipped IDX files alike") {
  t::TempDir dir;
  auto images = t::idx_images(5, 3, 4);
  auto labels = t::idx_labels({0, 9, 3, 3, 1});
  t::write_file(dir / "img", images);
  t::write_file(dir / "lab", labels);
  t::write_gz(dir / "img.gz", images);
  t::write_gz(dir / "lab.gz", labels);

  Dataset plain = load_idx(dir / "img", dir / "lab", 10, "mnist");
  CHECK(plain.name == "mnist");
  CHECK(plain.size() == 5);
  CHECK(plain.channels == 1);
  CHECK(plain.height == 3);
  CHECK(plain.width == 4);
  CHECK(plain.num_classes == 10);
  CHECK(plain.labels == std::vector<int32_t>{0, 9, 3, 3, 1});
  REQUIRE(plain.images.size() == 5 * 12);
  CHECK(plain.images[2 * 12 + 1 * 4 + 3] == uint8_t(2 * 7 + 7));  // image 2, row 1, col 3
  REQUIRE(plain.files.size() == 2);
  CHECK(plain.files[0].path == dir / "img");
  CHECK(plain.files[0].bytes == images.size());
  CHECK(plain.files[0].sha256 == sha256_file(dir / "img"));

  Dataset gz = load_idx(dir / "img.gz", dir / "lab.gz", 10, "mnist");
  CHECK(gz.images == plain.images);
  CHECK(gz.labels == plain.labels);
  CHECK(gz.files[0].sha256 == sha256_file(dir / "img.gz"));  // the file as on disk
  CHECK(gz.files[0].sha256 != plain.files[0].sha256);

  Dataset mixed = load_idx(dir / "img.gz", dir / "lab", 10, "mnist");
  CHECK(mixed.images == plain.images);
}

TEST_CASE("load_idx rejects bad input with file, offset and expected vs found") {
  t::TempDir dir;
  auto images = t::idx_images(4, 2, 2);
  auto labels = t::idx_labels({1, 2, 3, 4});
  t::write_file(dir / "img", images);
  t::write_file(dir / "lab", labels);

  SUBCASE("missing file") {
    CHECK_THROWS_WITH_AS(load_idx(dir / "absent", dir / "lab", 10, "mnist"), Contains((dir / "absent").c_str()), Error);
  }
  SUBCASE("wrong magic: labels passed as images") {
    auto msg = Contains("expected 0x00000803, found 0x00000801");
    CHECK_THROWS_WITH_AS(load_idx(dir / "lab", dir / "lab", 10, "mnist"), msg, Error);
    CHECK_THROWS_WITH_AS(load_idx(dir / "lab", dir / "lab", 10, "mnist"), Contains((dir / "lab").c_str()), Error);
  }
  SUBCASE("truncated image payload") {
    images.resize(images.size() - 3);
    t::write_file(dir / "short", images);
    CHECK_THROWS_WITH_AS(load_idx(dir / "short", dir / "lab", 10, "mnist"),
                         Contains("header promises 32 bytes, file has 29"), Error);
  }
  SUBCASE("truncated header") {
    t::write_file(dir / "tiny", {0, 0, 8, 3, 0});
    CHECK_THROWS_WITH_AS(load_idx(dir / "tiny", dir / "lab", 10, "mnist"), Contains("truncated"), Error);
  }
  SUBCASE("truncated gzip stream") {
    t::write_gz(dir / "img.gz", t::idx_images(200, 28, 28));
    auto gz = t::read_bytes(dir / "img.gz");
    gz.resize(gz.size() / 2);
    t::write_file(dir / "cut.gz", gz);
    CHECK_THROWS_WITH_AS(load_idx(dir / "cut.gz", dir / "lab", 10, "mnist"), Contains("damaged or truncated"), Error);
  }
  SUBCASE("trailing bytes") {
    labels.push_back(0);
    t::write_file(dir / "long", labels);
    CHECK_THROWS_WITH_AS(load_idx(dir / "img", dir / "long", 10, "mnist"), Contains("trailing bytes"), Error);
  }
  SUBCASE("label out of range: record index, value, file") {
    t::write_file(dir / "bad", t::idx_labels({1, 2, 3, 10}));
    try {
      load_idx(dir / "img", dir / "bad", 10, "mnist");
      FAIL("expected an error");
    } catch (const Error& e) {
      std::string m = e.what();
      CHECK(m.find("record 3") != std::string::npos);
      CHECK(m.find("byte offset 11") != std::string::npos);
      CHECK(m.find("label 10") != std::string::npos);
      CHECK(m.find(dir / "bad") != std::string::npos);
    }
  }
  SUBCASE("image/label count mismatch") {
    t::write_file(dir / "three", t::idx_labels({1, 2, 3}));
    CHECK_THROWS_WITH_AS(load_idx(dir / "img", dir / "three", 10, "mnist"),
                         Contains("has 4 images but"), Error);
  }
}

TEST_CASE("load_cifar10 converts CHW records to HWC and reads class names") {
  t::TempDir dir;
  for (int b = 1; b <= 5; ++b) {
    std::vector<uint8_t> v;
    t::append_cifar_record(v, {uint8_t(b)}, b);
    t::append_cifar_record(v, {uint8_t(9 - b)}, 100 + b);
    t::write_file(dir / ("data_batch_" + std::to_string(b) + ".bin"), v);
  }
  std::vector<uint8_t> test;
  for (int i = 0; i < 3; ++i) t::append_cifar_record(test, {uint8_t(i)}, 200 + i);
  t::write_file(dir / "test_batch.bin", test);

  Dataset train = load_cifar10(dir.str(), true);
  CHECK(train.size() == 10);
  CHECK(train.channels == 3);
  CHECK(train.height == 32);
  CHECK(train.width == 32);
  CHECK(train.labels == std::vector<int32_t>{1, 8, 2, 7, 3, 6, 4, 5, 5, 4});
  CHECK(train.files.size() == 5);
  CHECK(train.class_names.size() == 10);
  CHECK(train.class_names[0] == "airplane");
  // record 1 (seed 101), row 2, col 5 -> p = 69; channel c holds (seed + c*50 + p)
  const size_t base = 1 * 3072 + (2 * 32 + 5) * 3;
  CHECK(train.images[base + 0] == uint8_t(101 + 69));
  CHECK(train.images[base + 1] == uint8_t(101 + 50 + 69));
  CHECK(train.images[base + 2] == uint8_t(101 + 100 + 69));

  std::ofstream(dir / "batches.meta.txt") << "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n";
  Dataset te = load_cifar10(dir.str(), false);
  CHECK(te.size() == 3);
  CHECK(te.labels == std::vector<int32_t>{0, 1, 2});
  CHECK(te.class_names[9] == "j");
}

TEST_CASE("load_cifar10 / load_cifar100 reject bad files") {
  t::TempDir dir;
  std::vector<uint8_t> v;
  t::append_cifar_record(v, {3}, 0);
  t::append_cifar_record(v, {12}, 0);
  t::write_file(dir / "test_batch.bin", v);
  CHECK_THROWS_WITH_AS(load_cifar10(dir.str(), false), Contains("record 1 (byte offset 3073) has label 12"), Error);

  v.resize(3073 + 100);
  t::write_file(dir / "test_batch.bin", v);
  CHECK_THROWS_WITH_AS(load_cifar10(dir.str(), false), Contains("not a positive multiple of the record size 3073"),
                       Error);
  CHECK_THROWS_WITH_AS(load_cifar10(dir.str(), true), Contains("data_batch_1.bin"), Error);  // missing

  std::vector<uint8_t> c100;
  t::append_cifar_record(c100, {19, 99}, 0);
  t::append_cifar_record(c100, {5, 100}, 0);
  t::write_file(dir / "test.bin", c100);
  CHECK_THROWS_WITH_AS(load_cifar100(dir.str(), false), Contains("fine label 100"), Error);
  c100.pop_back();
  t::write_file(dir / "test.bin", c100);
  CHECK_THROWS_WITH_AS(load_cifar100(dir.str(), false), Contains("record size 3074"), Error);
}

TEST_CASE("load_cifar100 keeps fine or coarse labels") {
  t::TempDir dir;
  std::vector<uint8_t> v;
  t::append_cifar_record(v, {19, 99}, 1);
  t::append_cifar_record(v, {0, 42}, 2);
  t::write_file(dir / "train.bin", v);
  Dataset fine = load_cifar100(dir.str(), true);
  CHECK(fine.num_classes == 100);
  CHECK(fine.labels == std::vector<int32_t>{99, 42});
  CHECK(fine.images[(0 * 32 + 0) * 3 + 1] == uint8_t(1 + 50));
  Dataset coarse = load_cifar100(dir.str(), true, false);
  CHECK(coarse.num_classes == 20);
  CHECK(coarse.labels == std::vector<int32_t>{19, 0});
  CHECK(coarse.images == fine.images);
}

namespace {
/// root/<split>/<class>/<i>.png with a solid colour (BGR as OpenCV writes it).
void write_folder(const std::string& root, const std::vector<std::string>& classes, int per_class) {
  for (size_t k = 0; k < classes.size(); ++k) {
    std::filesystem::create_directories(root + "/" + classes[k]);
    for (int i = 0; i < per_class; ++i) {
      cv::Mat img(8, 6, CV_8UC3, cv::Scalar(10 * i, 20 * double(k), 200));  // B, G, R
      REQUIRE(cv::imwrite(root + "/" + classes[k] + "/" + std::to_string(i) + ".png", img));
    }
  }
  std::ofstream(root + "/" + classes[0] + "/notes.txt") << "ignored";
}
}  // namespace

TEST_CASE("load_image_folder: sorted classes, RGB order, resize, grey") {
  t::TempDir dir;
  write_folder(dir / "train", {"dog", "cat"}, 2);
  Dataset ds = load_image_folder(dir / "train", 4, 3, 3);
  CHECK(ds.class_names == std::vector<std::string>{"cat", "dog"});
  CHECK(ds.num_classes == 2);
  CHECK(ds.size() == 4);
  CHECK(ds.labels == std::vector<int32_t>{0, 0, 1, 1});
  CHECK(ds.height == 4);
  CHECK(ds.width == 3);
  CHECK(ds.files.size() == 4);
  // image 1 = cat (written second, k=1), i=1: B=10, G=20, R=200 -> stored R, G, B
  const uint8_t* px = ds.images.data() + 1 * ds.image_bytes() + (2 * 3 + 1) * 3;
  CHECK(int(px[0]) == 200);
  CHECK(int(px[1]) == 20);
  CHECK(int(px[2]) == 10);

  Dataset native = load_image_folder(dir / "train", 0, 0, 0);
  CHECK(native.height == 8);
  CHECK(native.width == 6);
  CHECK(native.channels == 3);

  Dataset grey = load_image_folder(dir / "train", 8, 6, 1);
  CHECK(grey.channels == 1);
  CHECK(grey.images.size() == 4 * 48);

  CHECK_THROWS_WITH_AS(load_image_folder(dir / "none", 4, 4, 3), Contains("does not exist"), Error);
  CHECK_THROWS_WITH_AS(load_image_folder(dir / "train", 4, 4, 3, {"cat", "fox"}), Contains("same class"), Error);
  t::write_file(dir / "train/cat/broken.png", {1, 2, 3});
  CHECK_THROWS_WITH_AS(load_image_folder(dir / "train", 4, 4, 3), Contains("broken.png"), Error);
}

TEST_CASE("load_dataset finds data under the roots and explains what is missing") {
  t::TempDir a, b;
  // mnist only in root b, gzipped train and plain test files
  t::write_gz(b / "mnist/train-images-idx3-ubyte.gz", t::idx_images(6, 2, 2));
  t::write_gz(b / "mnist/train-labels-idx1-ubyte.gz", t::idx_labels({0, 1, 2, 3, 4, 5}));
  t::write_file(b / "mnist/t10k-images-idx3-ubyte", t::idx_images(2, 2, 2));
  t::write_file(b / "mnist/t10k-labels-idx1-ubyte", t::idx_labels({7, 8}));
  DataSplit s = load_dataset("mnist", {a.str(), b.str()});
  CHECK(s.train.size() == 6);
  CHECK(s.test.size() == 2);
  CHECK(s.test.labels[1] == 8);
  CHECK(s.train.class_names.size() == 10);

  try {
    load_dataset("cifar10", {a.str(), b.str()});
    FAIL("expected an error");
  } catch (const Error& e) {
    std::string m = e.what();
    CHECK(m.find(a / "cifar-10-batches-bin") != std::string::npos);
    CHECK(m.find(b / "cifar-10-batches-bin") != std::string::npos);
    CHECK(m.find("datasets/fetch_cifar10.sh") != std::string::npos);
  }
  CHECK_THROWS_WITH_AS(load_dataset("mnist", {a.str()}), Contains("fetch_mnist.sh"), Error);

  std::filesystem::remove(b / "mnist/t10k-labels-idx1-ubyte");
  CHECK_THROWS_WITH_AS(load_dataset("mnist", {b.str()}), Contains("missing t10k-labels-idx1-ubyte"), Error);
  CHECK_THROWS_WITH_AS(load_dataset("imagenet", {b.str()}), Contains("unknown dataset 'imagenet'"), Error);

  write_folder(a / "pets/train", {"cat", "dog"}, 2);
  write_folder(a / "pets/test", {"cat", "dog"}, 1);
  DataSplit f = load_dataset("folder:" + (a / "pets") + ":4x4x1", {});
  CHECK(f.train.size() == 4);
  CHECK(f.test.size() == 2);
  CHECK(f.test.channels == 1);
  CHECK(f.test.height == 4);
  DataSplit rel = load_dataset("folder:pets", {b.str(), a.str()});  // relative to a root
  CHECK(rel.train.height == 8);
  CHECK(rel.test.width == 6);
  write_folder(a / "bad/train", {"cat", "dog"}, 1);
  write_folder(a / "bad/test", {"cat", "emu"}, 1);
  CHECK_THROWS_WITH_AS(load_dataset("folder:" + (a / "bad"), {}), Contains("same class"), Error);
  CHECK_THROWS_WITH_AS(load_dataset("folder:" + (a / "nowhere"), {}), Contains("not found"), Error);
}

TEST_CASE("data_files: paths relative to the root the split was found under, checksums kept") {
  namespace fs = std::filesystem;
  t::TempDir a, b;
  t::write_file(b / "mnist/train-images-idx3-ubyte", t::idx_images(3, 2, 2));
  t::write_gz(b / "mnist/train-labels-idx1-ubyte.gz", t::idx_labels({0, 1, 2}));
  t::write_file(b / "mnist/t10k-images-idx3-ubyte", t::idx_images(1, 2, 2));
  t::write_file(b / "mnist/t10k-labels-idx1-ubyte", t::idx_labels({7}));
  DataSplit s = load_dataset("mnist", {a.str(), b.str() + "/"});
  DataFiles f = data_files(s);
  CHECK(f.root == b.str());
  REQUIRE(f.files.size() == 4);
  CHECK(f.files[0].path == "mnist/train-images-idx3-ubyte");
  CHECK(f.files[1].path == "mnist/train-labels-idx1-ubyte.gz");
  CHECK(f.files[3].path == "mnist/t10k-labels-idx1-ubyte");
  CHECK(f.files[1].sha256 == s.train.files[1].sha256);
  CHECK(f.files[1].bytes == fs::file_size(b / "mnist/train-labels-idx1-ubyte.gz"));

  write_folder(a / "pets/train", {"cat", "dog"}, 1);
  write_folder(a / "pets/test", {"cat", "dog"}, 1);
  DataFiles rel = data_files(load_dataset("folder:pets", {b.str(), a.str()}));  // found under root a
  CHECK(rel.root == a.str());
  REQUIRE(rel.files.size() == 4);
  CHECK(rel.files[0].path.rfind("pets/train/cat/", 0) == 0);
  CHECK(rel.files[3].path.rfind("pets/test/dog/", 0) == 0);
  DataFiles abs = data_files(load_dataset("folder:" + (a / "pets"), {}));  // an absolute PATH: root is its parent
  CHECK(abs.root == a.str());
  CHECK(abs.files[0].path == rel.files[0].path);

  DataSplit outside = s;  // a file that is not under root keeps its absolute path
  outside.test.files[0].path = a / "elsewhere.bin";
  CHECK(data_files(outside).files[2].path == a / "elsewhere.bin");
  outside.root.clear();
  CHECK(data_files(outside).root.empty());
  CHECK(data_files(outside).files[0].path == fs::absolute(b / "mnist/train-images-idx3-ubyte").lexically_normal().string());
}

TEST_CASE("data_roots: cli dir, then $FRUGAL_DATA entries, then the source tree") {
  const char* old = std::getenv("FRUGAL_DATA");
  std::string saved = old ? old : "";
  setenv("FRUGAL_DATA", "/x::/y", 1);
  auto roots = data_roots("/cli");
  if (old) setenv("FRUGAL_DATA", saved.c_str(), 1);
  else unsetenv("FRUGAL_DATA");
  REQUIRE(roots.size() >= 3);
  CHECK(roots[0] == "/cli");
  CHECK(roots[1] == "/x");
  CHECK(roots[2] == "/y");
#ifdef FRUGAL_SOURCE_DIR
  REQUIRE(roots.size() == 4);
  CHECK(roots[3] == (std::filesystem::path(FRUGAL_SOURCE_DIR) / "datasets/data").string());
#else
  CHECK(roots.size() == 3);
#endif
}

TEST_CASE("label_histogram counts per class") {
  Dataset ds;
  ds.num_classes = 3;
  ds.labels = {0, 2, 2, 1, 2};
  CHECK(label_histogram(ds) == std::vector<size_t>{1, 1, 3});
}
