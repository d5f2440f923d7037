// Datasets decoded fully into RAM: MNIST / Fashion-MNIST (IDX), CIFAR-10 / CIFAR-100 (binary
// version), and image folders (one class per sub-folder). Every reader checks sizes, magic numbers
// and label ranges and throws frugal::Error naming the file, the byte offset or record index, and
// what to do. This folder is the only place cv::Mat appears (dataset.cpp, load_image_folder).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace frugal::data {

/// One file a dataset was read from, as it is on disk (compressed bytes for .gz files).
struct FileChecksum {
  std::string path;
  std::string sha256;  // 64 lower-case hex digits
  uint64_t bytes = 0;
};

/// A labelled image set, fully decoded in RAM.
struct Dataset {
  std::string name;                      // "mnist", "fashion-mnist", "cifar10", "cifar100", "folder"
  int channels = 1, height = 0, width = 0, num_classes = 0;
  std::vector<uint8_t> images;           // (N, H, W, C) interleaved uint8, RGB order for C == 3
  std::vector<int32_t> labels;           // (N), each in [0, num_classes)
  std::vector<std::string> class_names;  // (num_classes) or empty
  std::vector<FileChecksum> files;       // the files it was read from, in reading order
  size_t size() const { return labels.size(); }
  size_t image_bytes() const { return size_t(height) * size_t(width) * size_t(channels); }  // H*W*C
};

struct DataSplit {
  Dataset train, test;
  std::string root;  // the directory the files were found under: every files[].path is root/<relative path>
};

/// The files a split was read from (train then test), for results.json: `root` absolute, each path relative
/// to it ("cifar-10-batches-bin/data_batch_1.bin"), so results name the data, not the machine's layout.
/// A file outside root (or with root empty) keeps its absolute path.
struct DataFiles {
  std::string root;
  std::vector<FileChecksum> files;  // path relative to root; sha256 and bytes as read
};
DataFiles data_files(const DataSplit& split);

/// IDX pair (LeCun's format). Either file may be plain or gzip-compressed (detected by its first
/// bytes, not its name). Images: big-endian magic 0x00000803, N, rows, cols, then N*rows*cols bytes.
/// Labels: magic 0x00000801, N, then N bytes, each < num_classes. Result: channels 1, HxW = rows x cols.
Dataset load_idx(const std::string& images_path, const std::string& labels_path, int num_classes,
                 const std::string& name);

/// CIFAR-10 binary version: dir/data_batch_1..5.bin (train) or dir/test_batch.bin; records of
/// 1 label byte + 3072 pixel bytes (1024 R, 1024 G, 1024 B, row-major 32x32), stored here as HWC.
/// Class names come from dir/batches.meta.txt when present.
Dataset load_cifar10(const std::string& dir, bool train);

/// CIFAR-100 binary version: dir/train.bin or dir/test.bin; records of coarse label (< 20),
/// fine label (< 100), 3072 pixel bytes. fine_labels picks which label is kept (100 or 20 classes).
/// Class names from dir/fine_label_names.txt or dir/coarse_label_names.txt when present.
Dataset load_cifar100(const std::string& dir, bool train, bool fine_labels = true);

/// Image folder: dir/<class>/<image>; classes are the sub-folders in sorted (byte) order, images in
/// sorted order within each. Files with extensions png, jpg, jpeg, bmp, pgm, ppm, pbm, tif, tiff,
/// webp are read; other files are ignored. channels: 1 (grey) or 3 (RGB). Every image is resized to
/// height x width (cv::INTER_AREA when shrinking, cv::INTER_LINEAR otherwise). height, width or
/// channels <= 0 means "take it from the first image" (channels: 1 if it is grey, else 3).
/// expected_classes, when non-empty, must equal the sub-folder names (used to align a test split
/// with its train split).
Dataset load_image_folder(const std::string& dir, int height, int width, int channels,
                          const std::vector<std::string>& expected_classes = {});

/// Roots searched, in order: cli_dir (if non-empty), each non-empty entry of $FRUGAL_DATA split on
/// ':', then <FRUGAL_SOURCE_DIR>/datasets/data (when the macro is defined at build time).
std::vector<std::string> data_roots(const std::string& cli_dir);

/// name: mnist | fashion-mnist | cifar10 | cifar100 | folder:PATH | folder:PATH:HxWxC
/// Layout under a root: mnist/, fashion-mnist/, cifar-10-batches-bin/, cifar-100-binary/; MNIST and
/// Fashion files may be plain or .gz (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
/// t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]). Fashion-MNIST is also looked up in
/// /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist).
/// folder: PATH/train and PATH/test sub-folders (PATH absolute, relative to the working directory,
/// or relative to a root); HxWxC optional (default: from the first training image); the test split
/// must have the same class folders as the train split.
/// Missing dataset: the error lists every directory looked in and the script that fetches it.
DataSplit load_dataset(const std::string& name, const std::vector<std::string>& roots);

/// SHA-256 (FIPS 180-4), hand-written; returns 64 lower-case hex digits.
std::string sha256_bytes(const void* data, size_t n);
std::string sha256_file(const std::string& path);

/// Per-class example counts: (num_classes).
std::vector<size_t> label_histogram(const Dataset& ds);

}  // namespace frugal::data
