#include "data/idx.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace shoal {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void WriteBytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

std::vector<uint8_t> Gzip(const std::vector<uint8_t>& in) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY),
            Z_OK);
  std::vector<uint8_t> out(deflateBound(&zs, in.size()) + 64);
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// Header bytes for a u8 IDX file with the given dims.
std::vector<uint8_t> Header(const std::vector<uint32_t>& dims, uint8_t type = data::kIdxU8) {
  std::vector<uint8_t> h = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) h.push_back(static_cast<uint8_t>(d >> shift));
  }
  return h;
}

data::IdxArray Sample(std::vector<int64_t> dims, uint32_t seed) {
  data::IdxArray a;
  a.dims = std::move(dims);
  size_t n = 1;
  for (int64_t d : a.dims) n *= static_cast<size_t>(d);
  std::mt19937 rng(seed);
  for (size_t i = 0; i < n; ++i) a.data.push_back(static_cast<uint8_t>(rng()));
  return a;
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class IdxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::path(::testing::TempDir()) / "idx_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string Path(const std::string& name) const { return (fs::path(dir_) / name).string(); }

  std::string dir_;
};

TEST_F(IdxTest, RoundTripPlain) {
  const data::IdxArray a = Sample({3, 4, 5}, 1);
  const std::string path = Path("a.idx");
  ASSERT_TRUE(data::WriteIdx(path, a, /*gzip=*/false).ok());
  for (const auto& entry : fs::directory_iterator(dir_))
    EXPECT_EQ(entry.path().filename(), "a.idx") << "a temporary file was left behind";
  std::vector<uint8_t> expected = Header({3, 4, 5});
  expected.insert(expected.end(), a.data.begin(), a.data.end());
  EXPECT_EQ(ReadBytes(path), expected);
  Result<data::IdxArray> r = data::ReadIdx(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->type_code, data::kIdxU8);
  EXPECT_EQ(r->dims, a.dims);
  EXPECT_EQ(r->data, a.data);
}

// Issue #20: the temporary file had a predictable name and was opened with O_TRUNC, following a
// symlink planted there - a victim file was truncated and overwritten.
TEST_F(IdxTest, ASymlinkPlantedAtTheOldTemporaryNameIsNotFollowed) {
  const std::string victim = Path("victim");
  { std::ofstream(victim) << "precious"; }
  const std::string path = Path("b.idx");
  fs::create_symlink(victim, path + ".tmp");
  ASSERT_TRUE(data::WriteIdx(path, Sample({2, 2}, 3), /*gzip=*/false).ok());
  std::ifstream in(victim);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "precious");
  EXPECT_EQ(fs::status(path).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                fs::perms::others_read);
}

TEST_F(IdxTest, RoundTripGzip) {
  const data::IdxArray a = Sample({7, 2, 3, 2}, 2);
  const std::string path = Path("a.idx.gz");
  ASSERT_TRUE(data::WriteIdx(path, a, /*gzip=*/true).ok());
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  const std::vector<uint8_t> bytes = ReadBytes(path);
  ASSERT_GE(bytes.size(), 2u);
  EXPECT_EQ(bytes[0], 0x1f);
  EXPECT_EQ(bytes[1], 0x8b);
  Result<data::IdxArray> r = data::ReadIdx(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->dims, a.dims);
  EXPECT_EQ(r->data, a.data);
}

TEST_F(IdxTest, GzipDetectedByMagicNotName) {
  const data::IdxArray a = Sample({10}, 3);
  const std::string gz_without_suffix = Path("labels");
  ASSERT_TRUE(data::WriteIdx(gz_without_suffix, a, /*gzip=*/true).ok());
  Result<data::IdxArray> r = data::ReadIdx(gz_without_suffix);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->data, a.data);
}

TEST_F(IdxTest, EmptyDimIsAllowed) {
  data::IdxArray a;
  a.dims = {0, 28, 28};
  const std::string path = Path("empty.idx");
  ASSERT_TRUE(data::WriteIdx(path, a, false).ok());
  Result<data::IdxArray> r = data::ReadIdx(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->dims, a.dims);
  EXPECT_TRUE(r->data.empty());
}

TEST_F(IdxTest, TruncatedPlainFileIsCorrupt) {
  const data::IdxArray a = Sample({4, 5, 3}, 4);  // header 16 bytes, data 60 bytes
  std::vector<uint8_t> full = Header({4, 5, 3});
  full.insert(full.end(), a.data.begin(), a.data.end());
  const std::string path = Path("trunc.idx");
  for (size_t len : {0, 1, 3, 4, 5, 10, 15, 16, 17, 46, 75}) {
    SCOPED_TRACE("prefix length " + std::to_string(len));
    WriteBytes(path, std::vector<uint8_t>(full.begin(), full.begin() + len));
    Result<data::IdxArray> r = data::ReadIdx(path);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Code::kCorrupt) << r.status().ToString();
    EXPECT_TRUE(Contains(r.status().message(), path)) << r.status().message();
    EXPECT_TRUE(Contains(r.status().message(), "truncated")) << r.status().message();
    if (len >= 16) {
      EXPECT_TRUE(Contains(r.status().message(),
                           "truncated: expected 60 data bytes, got " + std::to_string(len - 16)))
          << r.status().message();
    }
  }
}

TEST_F(IdxTest, TruncatedGzipFileIsCorrupt) {
  const data::IdxArray a = Sample({20, 8, 8}, 5);
  const std::string good = Path("good.gz");
  ASSERT_TRUE(data::WriteIdx(good, a, true).ok());
  const std::vector<uint8_t> full = ReadBytes(good);
  const std::string path = Path("trunc.gz");
  for (size_t len : {size_t{2}, size_t{5}, size_t{10}, size_t{20}, full.size() / 2, full.size() - 8,
                     full.size() - 4, full.size() - 1}) {
    SCOPED_TRACE("prefix length " + std::to_string(len) + " of " + std::to_string(full.size()));
    WriteBytes(path, std::vector<uint8_t>(full.begin(), full.begin() + len));
    Result<data::IdxArray> r = data::ReadIdx(path);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Code::kCorrupt) << r.status().ToString();
    EXPECT_TRUE(Contains(r.status().message(), path)) << r.status().message();
  }
}

TEST_F(IdxTest, GzipOfTruncatedPayloadReportsByteCounts) {
  const data::IdxArray a = Sample({4, 5, 3}, 6);
  std::vector<uint8_t> payload = Header({4, 5, 3});
  payload.insert(payload.end(), a.data.begin(), a.data.begin() + 30);
  const std::string path = Path("short.gz");
  WriteBytes(path, Gzip(payload));
  Result<data::IdxArray> r = data::ReadIdx(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kCorrupt);
  EXPECT_EQ(r.status().message(), path + ": truncated: expected 60 data bytes, got 30");
}

TEST_F(IdxTest, CorruptGzipDataIsCorrupt) {
  const data::IdxArray a = Sample({50, 10}, 7);
  const std::string path = Path("bad.gz");
  ASSERT_TRUE(data::WriteIdx(path, a, true).ok());
  std::vector<uint8_t> bytes = ReadBytes(path);
  bytes[bytes.size() - 6] ^= 0xff;  // inside the CRC32 trailer
  WriteBytes(path, bytes);
  Result<data::IdxArray> r = data::ReadIdx(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kCorrupt) << r.status().ToString();
  EXPECT_TRUE(Contains(r.status().message(), path));
}

TEST_F(IdxTest, WrongMagicIsCorrupt) {
  const std::string path = Path("magic.idx");
  std::vector<uint8_t> bytes = {0x01, 0x02, 0x08, 0x01, 0, 0, 0, 1, 42};
  WriteBytes(path, bytes);
  Result<data::IdxArray> r = data::ReadIdx(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kCorrupt);
  EXPECT_TRUE(Contains(r.status().message(), path));
  EXPECT_TRUE(Contains(r.status().message(), "bad magic")) << r.status().message();
  EXPECT_TRUE(Contains(r.status().message(), "byte offset 0")) << r.status().message();

  // A text file that happens to be named like an IDX file.
  WriteBytes(path, std::vector<uint8_t>{'h', 'e', 'l', 'l', 'o', '\n'});
  r = data::ReadIdx(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kCorrupt);
}

TEST_F(IdxTest, BadNdimsIsCorrupt) {
  const std::string path = Path("ndims.idx");
  for (uint8_t ndims : {uint8_t{0}, uint8_t{5}, uint8_t{255}}) {
    WriteBytes(path, {0, 0, 0x08, ndims, 0, 0, 0, 1, 0, 0, 0, 1});
    Result<data::IdxArray> r = data::ReadIdx(path);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Code::kCorrupt);
    EXPECT_TRUE(Contains(r.status().message(), path));
    EXPECT_TRUE(Contains(r.status().message(), "byte offset 3")) << r.status().message();
  }
}

TEST_F(IdxTest, UnsupportedTypesAreRejected) {
  const std::string path = Path("float.idx");
  std::vector<uint8_t> bytes = Header({2}, data::kIdxF32);
  bytes.resize(bytes.size() + 8, 0);
  WriteBytes(path, bytes);
  Result<data::IdxArray> r = data::ReadIdx(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(r.status().message(), path));
  EXPECT_TRUE(Contains(r.status().message(), "0x0d")) << r.status().message();
  EXPECT_TRUE(Contains(r.status().message(), "only 0x08")) << r.status().message();

  WriteBytes(path, {0, 0, 0x07, 1, 0, 0, 0, 1, 0});
  r = data::ReadIdx(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kCorrupt);
  EXPECT_TRUE(Contains(r.status().message(), "unknown element type 0x07"));
}

TEST_F(IdxTest, TrailingBytesAreCorrupt) {
  std::vector<uint8_t> bytes = Header({3});
  bytes.insert(bytes.end(), {1, 2, 3, 4});
  const std::string plain = Path("trailing.idx");
  WriteBytes(plain, bytes);
  Result<data::IdxArray> r = data::ReadIdx(plain);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kCorrupt);
  EXPECT_TRUE(Contains(r.status().message(), plain + ": 1 unexpected trailing bytes"))
      << r.status().message();

  const std::string gz = Path("trailing.gz");
  WriteBytes(gz, Gzip(bytes));
  r = data::ReadIdx(gz);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kCorrupt);
  EXPECT_TRUE(Contains(r.status().message(), gz));
}

TEST_F(IdxTest, MissingFileIsNotFound) {
  Result<data::IdxArray> r = data::ReadIdx(Path("nope.idx"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_TRUE(Contains(r.status().message(), Path("nope.idx")));
}

TEST_F(IdxTest, DirectoryIsRejected) {
  Result<data::IdxArray> r = data::ReadIdx(dir_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
}

TEST_F(IdxTest, OverLimitIsRejected) {
  // 65536^3 bytes: far beyond the 2 GiB limit, checked against the small file first.
  const std::string plain = Path("huge.idx");
  WriteBytes(plain, Header({65536, 65536, 65536}));
  Result<data::IdxArray> r = data::ReadIdx(plain);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kCorrupt);
  EXPECT_TRUE(Contains(r.status().message(),
                       plain + ": truncated: expected 281474976710656 data bytes, got 0"))
      << r.status().message();

  const std::string gz = Path("huge.gz");
  WriteBytes(gz, Gzip(Header({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu})));
  r = data::ReadIdx(gz);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(r.status().message(), gz));
  EXPECT_TRUE(Contains(r.status().message(), "limit")) << r.status().message();
}

// Runs ReadIdx(path) in a child whose address space may grow by at most 256 MiB, so reading a
// file whose header claims ~1 GB must fail cleanly (Corrupt) instead of allocating the claim.
void ExpectCorruptWithinMemoryCap(const std::string& path, const std::string& expected) {
  fflush(nullptr);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    long pages = 0;
    if (FILE* f = std::fopen("/proc/self/statm", "r")) {
      if (std::fscanf(f, "%ld", &pages) != 1) pages = 0;
      std::fclose(f);
    }
    const rlim_t cap = static_cast<rlim_t>(pages) * static_cast<rlim_t>(sysconf(_SC_PAGESIZE)) +
                       (rlim_t{256} << 20);
    struct rlimit rl = {cap, cap};
    if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(3);
    Result<data::IdxArray> r = data::ReadIdx(path);
    if (r.ok()) _exit(1);
    if (r.status().code() != Code::kCorrupt) _exit(2);
    if (r.status().message().find(expected) == std::string::npos) _exit(4);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "child died (signal " << WTERMSIG(status) << ")";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "path " << path;
}

TEST_F(IdxTest, AbsurdDimsVsFileSizeRejectedWithoutHugeAllocation) {
  // Plain: claims 10^9 bytes (under the 2 GiB limit) but holds 16.
  const std::string plain = Path("absurd.idx");
  std::vector<uint8_t> bytes = Header({1000, 1000, 1000});
  bytes.resize(bytes.size() + 16, 7);
  WriteBytes(plain, bytes);
  ExpectCorruptWithinMemoryCap(plain,
                               plain + ": truncated: expected 1000000000 data bytes, got 16");

  // Gzip, tiny: 10^9 bytes cannot come out of a few dozen compressed bytes.
  const std::string tiny_gz = Path("absurd_tiny.gz");
  WriteBytes(tiny_gz, Gzip(bytes));
  ExpectCorruptWithinMemoryCap(tiny_gz,
                               tiny_gz + ": truncated: expected 1000000000 data bytes, got 16");

  // Gzip with ~1 MiB of incompressible payload: the ratio bound allows the claim, so the reader
  // must grow its buffer only as data actually arrives.
  std::vector<uint8_t> big = Header({1000, 1000, 1000});
  std::mt19937 rng(9);
  for (int i = 0; i < (1 << 20); ++i) big.push_back(static_cast<uint8_t>(rng()));
  const std::string big_gz = Path("absurd_big.gz");
  WriteBytes(big_gz, Gzip(big));
  ExpectCorruptWithinMemoryCap(big_gz,
                               big_gz + ": truncated: expected 1000000000 data bytes, got 1048576");
}

TEST_F(IdxTest, WriteRejectsInconsistentArrays) {
  data::IdxArray a;
  a.dims = {2, 3};
  a.data = {1, 2, 3};
  Status st = data::WriteIdx(Path("bad.idx"), a, false);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(st.message(), Path("bad.idx")));
  EXPECT_FALSE(fs::exists(Path("bad.idx")));

  a.dims = {};
  a.data = {};
  EXPECT_EQ(data::WriteIdx(Path("bad.idx"), a, false).code(), Code::kInvalidArgument);
  a.dims = {1, 1, 1, 1, 1};
  a.data = {1};
  EXPECT_EQ(data::WriteIdx(Path("bad.idx"), a, false).code(), Code::kInvalidArgument);
  a.dims = {-1};
  EXPECT_EQ(data::WriteIdx(Path("bad.idx"), a, false).code(), Code::kInvalidArgument);
  a.dims = {1};
  a.type_code = 0x42;
  EXPECT_EQ(data::WriteIdx(Path("bad.idx"), a, false).code(), Code::kInvalidArgument);
}

TEST_F(IdxTest, WriteIntoMissingDirectoryIsIoError) {
  const data::IdxArray a = Sample({4}, 10);
  Status st = data::WriteIdx(Path("no/such/dir/a.idx"), a, false);
  EXPECT_EQ(st.code(), Code::kIo);
  EXPECT_TRUE(Contains(st.message(), Path("no/such/dir/a.idx")));
}

// --- LoadIdxDataset / SplitValidation ---

class IdxDatasetTest : public IdxTest {
 protected:
  // Writes n images of h x w whose pixels are all `i % 256` for image i, and labels i % 10.
  void WriteSplit(const std::string& split, int64_t n, int64_t h, int64_t w, bool gzip,
                  int64_t label_count = -1) {
    data::IdxArray images;
    images.dims = {n, h, w};
    for (int64_t i = 0; i < n; ++i) {
      images.data.insert(images.data.end(), static_cast<size_t>(h * w),
                         static_cast<uint8_t>(i % 256));
    }
    data::IdxArray labels;
    if (label_count < 0) label_count = n;
    labels.dims = {label_count};
    for (int64_t i = 0; i < label_count; ++i) labels.data.push_back(static_cast<uint8_t>(i % 10));
    const std::string suffix = gzip ? ".gz" : "";
    ASSERT_TRUE(data::WriteIdx(Path(split + "-images-idx3-ubyte" + suffix), images, gzip).ok());
    ASSERT_TRUE(data::WriteIdx(Path(split + "-labels-idx1-ubyte" + suffix), labels, gzip).ok());
  }
};

TEST_F(IdxDatasetTest, LoadsFashionMnistTestSplit) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(dir + "/t10k-images-idx3-ubyte.gz") &&
      !fs::exists(dir + "/t10k-images-idx3-ubyte")) {
    GTEST_SKIP() << "Fashion-MNIST not installed at " << dir;
  }
  Result<data::Dataset> r = data::LoadIdxDataset(dir, "t10k", 100);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const data::Dataset& ds = *r;
  EXPECT_EQ(ds.sample_shape, (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(ds.sample_numel(), 784);
  ASSERT_EQ(ds.size(), 100);
  ASSERT_EQ(ds.pixels.size(), 100u * 784u);  // images stay bytes: a quarter of float32
  EXPECT_TRUE(ds.features.empty());
  for (int64_t label : ds.labels) {
    EXPECT_GE(label, 0);
    EXPECT_LT(label, 10);
  }
  EXPECT_LE(ds.num_classes(), 10);
  float max_value = 0;
  for (float v : ds.FloatFeatures()) {
    ASSERT_GE(v, 0.0f);
    ASSERT_LE(v, 1.0f);
    max_value = std::max(max_value, v);
  }
  EXPECT_GT(max_value, 0.5f);  // real images, not all zeros
}

TEST_F(IdxDatasetTest, LoadsSyntheticSplitAndAppliesLimit) {
  WriteSplit("train", 30, 3, 2, /*gzip=*/false);
  Result<data::Dataset> r = data::LoadIdxDataset(dir_, "train");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->size(), 30);
  EXPECT_EQ(r->sample_shape, (std::vector<int64_t>{1, 3, 2}));
  EXPECT_EQ(r->num_classes(), 10);
  EXPECT_EQ(r->pixels[6 * 7], 7);
  EXPECT_EQ(r->FloatFeatures()[6 * 7], 7.0f / 255.0f);
  r = data::LoadIdxDataset(dir_, "train", 12);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->size(), 12);
  EXPECT_EQ(r->pixels.size(), 12u * 6u);
  EXPECT_EQ(r->pixels.capacity(), 12u * 6u);  // the rest of the file is not kept
}

TEST_F(IdxDatasetTest, PrefersGzipWhenBothExist) {
  WriteSplit("t10k", 5, 2, 2, /*gzip=*/false);
  WriteSplit("t10k", 8, 2, 2, /*gzip=*/true);
  Result<data::Dataset> r = data::LoadIdxDataset(dir_, "t10k");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->size(), 8);
}

TEST_F(IdxDatasetTest, CountMismatchNamesBothFiles) {
  WriteSplit("train", 10, 2, 2, false, /*label_count=*/9);
  Result<data::Dataset> r = data::LoadIdxDataset(dir_, "train");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(r.status().message(), Path("train-images-idx3-ubyte")));
  EXPECT_TRUE(Contains(r.status().message(), Path("train-labels-idx1-ubyte")));
}

TEST_F(IdxDatasetTest, RejectsBadArguments) {
  Result<data::Dataset> r = data::LoadIdxDataset(dir_, "train");
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_TRUE(Contains(r.status().message(), "train-images-idx3-ubyte"));
  WriteSplit("train", 4, 2, 2, false);
  EXPECT_EQ(data::LoadIdxDataset(dir_, "validation").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(data::LoadIdxDataset(dir_, "train", -1).status().code(), Code::kInvalidArgument);
  // Images with the wrong rank.
  data::IdxArray flat;
  flat.dims = {4};
  flat.data = {1, 2, 3, 4};
  ASSERT_TRUE(data::WriteIdx(Path("train-images-idx3-ubyte"), flat, false).ok());
  r = data::LoadIdxDataset(dir_, "train");
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(r.status().message(), Path("train-images-idx3-ubyte")));
}

TEST(DatasetTest, SplitValidationIsDeterministicAndDisjoint) {
  data::Dataset all;
  all.sample_shape = {2};
  for (int64_t i = 0; i < 101; ++i) {
    all.features.push_back(static_cast<float>(i));
    all.features.push_back(static_cast<float>(-i));
    all.labels.push_back(i % 3);
  }
  auto [train, val] = data::SplitValidation(all, 0.2, 42);
  EXPECT_EQ(val.size(), 20);
  EXPECT_EQ(train.size(), 81);
  EXPECT_EQ(train.sample_shape, all.sample_shape);
  std::vector<int64_t> seen;
  for (const data::Dataset* d : {&train, &val}) {
    ASSERT_EQ(d->features.size(), static_cast<size_t>(d->size()) * 2);
    for (int64_t k = 0; k < d->size(); ++k) {
      const int64_t i = static_cast<int64_t>(d->features[static_cast<size_t>(2 * k)]);
      EXPECT_EQ(d->features[static_cast<size_t>(2 * k + 1)], static_cast<float>(-i));
      EXPECT_EQ(d->labels[static_cast<size_t>(k)], i % 3);
      if (k > 0) {
        EXPECT_LT(d->features[static_cast<size_t>(2 * (k - 1))],
                  d->features[static_cast<size_t>(2 * k)]);  // original order kept
      }
      seen.push_back(i);
    }
  }
  std::sort(seen.begin(), seen.end());
  for (int64_t i = 0; i < 101; ++i) EXPECT_EQ(seen[static_cast<size_t>(i)], i);

  auto [train2, val2] = data::SplitValidation(all, 0.2, 42);
  EXPECT_EQ(val2.features, val.features);
  auto [train3, val3] = data::SplitValidation(all, 0.2, 43);
  EXPECT_NE(val3.features, val.features);

  EXPECT_EQ(data::SplitValidation(all, 0.0, 1).second.size(), 0);
  EXPECT_EQ(data::SplitValidation(all, -3.0, 1).first.size(), 101);

  // The in-place form (the worker's: the silo is not held twice) splits identically.
  for (double fraction : {0.0, 0.2, 0.5, 1.0}) {
    auto [copy_train, copy_val] = data::SplitValidation(all, fraction, 42);
    data::Dataset moved = all;
    auto [in_place_train, in_place_val] = data::SplitValidation(std::move(moved), fraction, 42);
    EXPECT_EQ(in_place_train.features, copy_train.features) << fraction;
    EXPECT_EQ(in_place_train.labels, copy_train.labels) << fraction;
    EXPECT_EQ(in_place_train.sample_shape, copy_train.sample_shape) << fraction;
    EXPECT_EQ(in_place_val.features, copy_val.features) << fraction;
    EXPECT_EQ(in_place_val.labels, copy_val.labels) << fraction;
  }
}

TEST(DatasetTest, ImageSplitsMoveTheBytesOfEachSample) {
  data::Dataset all;
  all.sample_shape = {1, 1, 3};
  for (int64_t i = 0; i < 50; ++i) {
    for (int k = 0; k < 3; ++k) all.pixels.push_back(static_cast<uint8_t>(i * 5 + k));
    all.labels.push_back(i % 7);
  }
  for (double fraction : {0.0, 0.3, 1.0}) {
    auto [copy_train, copy_val] = data::SplitValidation(all, fraction, 9);
    data::Dataset moved = all;
    auto [train, val] = data::SplitValidation(std::move(moved), fraction, 9);
    EXPECT_EQ(train.pixels, copy_train.pixels) << fraction;
    EXPECT_EQ(val.pixels, copy_val.pixels) << fraction;
    EXPECT_EQ(train.size() + val.size(), 50) << fraction;
    for (const data::Dataset* d : {&train, &val}) {
      EXPECT_TRUE(d->features.empty());
      ASSERT_EQ(d->pixels.size(), static_cast<size_t>(d->size()) * 3);
      for (int64_t k = 0; k < d->size(); ++k) {
        const int64_t i = d->pixels[static_cast<size_t>(3 * k)] / 5;  // sample index
        EXPECT_EQ(d->pixels[static_cast<size_t>(3 * k + 2)], i * 5 + 2);
        EXPECT_EQ(d->labels[static_cast<size_t>(k)], i % 7);
      }
    }
  }
}

TEST(DatasetTest, SizesAndClasses) {
  data::Dataset ds;
  EXPECT_EQ(ds.size(), 0);
  EXPECT_EQ(ds.sample_numel(), 0);
  EXPECT_EQ(ds.num_classes(), 0);
  ds.sample_shape = {1, 4, 5};
  ds.labels = {3, 0, 7};
  EXPECT_EQ(ds.sample_numel(), 20);
  EXPECT_EQ(ds.num_classes(), 8);
}

TEST(DatasetTest, ShuffleIndicesIsAPermutationAndSeeded) {
  std::vector<int64_t> v(1000);
  for (int64_t i = 0; i < 1000; ++i) v[static_cast<size_t>(i)] = i;
  std::vector<int64_t> a = v, b = v, c = v;
  std::mt19937_64 r1(5), r2(5), r3(6);
  data::ShuffleIndices(a, r1);
  data::ShuffleIndices(b, r2);
  data::ShuffleIndices(c, r3);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(a, v);
  std::sort(a.begin(), a.end());
  EXPECT_EQ(a, v);
  std::mt19937_64 rng(1);
  for (int i = 0; i < 1000; ++i) EXPECT_LT(data::UniformIndex(rng, 7), 7u);
}

}  // namespace
}  // namespace shoal
