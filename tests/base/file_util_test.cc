#include "base/file_util.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace shoal {
namespace {

namespace fs = std::filesystem;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class FileUtilTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::path(::testing::TempDir()) / "file_util_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string Path(const std::string& name) const { return (fs::path(dir_) / name).string(); }
  std::vector<std::string> Entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) out.push_back(e.path().filename().string());
    return out;
  }
  static std::string Slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::string dir_;
};

TEST_F(FileUtilTest, WriteFileAtomicCreatesAndReplaces) {
  const std::string path = Path("model.bin");
  ASSERT_TRUE(WriteFileAtomic(path, std::string("first version, rather long")).ok());
  EXPECT_EQ(Slurp(path), "first version, rather long");
  ASSERT_TRUE(WriteFileAtomic(path, std::string("second")).ok());
  EXPECT_EQ(Slurp(path), "second");  // replaced, not overwritten in place
  ASSERT_TRUE(WriteFileAtomic(path, std::string()).ok());
  EXPECT_TRUE(fs::exists(path));
  EXPECT_EQ(fs::file_size(path), 0u);
}

TEST_F(FileUtilTest, WriteFileAtomicConcatenatesParts) {
  const std::string path = Path("parts.bin");
  std::string binary("\0\x01\xff", 3);
  ASSERT_TRUE(WriteFileAtomic(path, {"head", "", binary, "tail"}).ok());
  EXPECT_EQ(Slurp(path), "head" + binary + "tail");
}

TEST_F(FileUtilTest, WriteFileAtomicLeavesNoTempFiles) {
  const std::string path = Path("v000001.json");
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(WriteFileAtomic(path, std::to_string(i)).ok());
  EXPECT_EQ(Entries(), std::vector<std::string>{"v000001.json"});
}

TEST_F(FileUtilTest, WriteFileAtomicInMissingDirectoryFailsCleanly) {
  const std::string path = Path("no/such/dir/file.bin");
  Status st = WriteFileAtomic(path, std::string("data"));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Code::kIo) << st.ToString();
  EXPECT_TRUE(Contains(st.message(), path)) << st.message();
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(Entries().empty());
}

TEST_F(FileUtilTest, WriteFileAtomicOverADirectoryFailsAndKeepsNoTemp) {
  // The rename fails (target is a non-empty directory): the temp file must be removed.
  const std::string path = Path("occupied");
  fs::create_directories(path + "/child");
  Status st = WriteFileAtomic(path, std::string("data"));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Code::kIo) << st.ToString();
  EXPECT_TRUE(Contains(st.message(), path)) << st.message();
  EXPECT_EQ(Entries(), std::vector<std::string>{"occupied"});
}

// Issue #20: temporary names were "<path>.tmp.<pid>.<counter>" and opened without O_EXCL or
// O_NOFOLLOW, so another local user could plant a symlink there and have the write truncate
// and fill any file the writer may write (here: `victim`). Names are random now and never
// followed: every predictable name is planted, and the victim stays as it was.
TEST_F(FileUtilTest, PlantedSymlinksAtPredictableTempNamesAreNotFollowed) {
  const std::string victim = Path("victim");
  { std::ofstream(victim) << "precious"; }
  const std::string path = Path("state.json");
  const std::string key = Path("worker.key");
  const std::string pid = std::to_string(::getpid());
  for (int n = 0; n < 2000; ++n) {
    for (const std::string& planted : {path + ".tmp." + pid + "." + std::to_string(n),
                                       key + ".new." + pid + "." + std::to_string(n)}) {
      ASSERT_EQ(::symlink(victim.c_str(), planted.c_str()), 0) << planted;
    }
  }
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(WriteFileAtomic(path, "attacker-chosen " + std::to_string(i)).ok());
  }
  ASSERT_TRUE(CreateFileAtomic(key, "secret", 0600).ok());
  EXPECT_EQ(Slurp(victim), "precious");
  EXPECT_EQ(Slurp(path), "attacker-chosen 4");
  EXPECT_EQ(Slurp(key), "secret");
  EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(path)));
  EXPECT_EQ(fs::status(key).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  // Only the planted links, the victim and the two files: no temporary file is left over.
  EXPECT_EQ(Entries().size(), 4000u + 3u);
}

TEST_F(FileUtilTest, ReadFileReadsWholeFile) {
  const std::string path = Path("data.bin");
  std::string bytes;
  for (int i = 0; i < 100000; ++i) bytes.push_back(static_cast<char>(i * 7));
  ASSERT_TRUE(WriteFileAtomic(path, bytes).ok());
  Result<std::string> r = ReadFile(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, bytes);
}

TEST_F(FileUtilTest, ReadFileMissingIsNotFound) {
  const std::string path = Path("missing.bin");
  Result<std::string> r = ReadFile(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_TRUE(Contains(r.status().message(), path)) << r.status().message();
}

TEST_F(FileUtilTest, ReadFileEnforcesMaxBytes) {
  const std::string path = Path("ten.bin");
  ASSERT_TRUE(WriteFileAtomic(path, std::string("0123456789")).ok());
  Result<std::string> r = ReadFile(path, 9);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(r.status().message(), path)) << r.status().message();
  r = ReadFile(path, 10);  // the limit is inclusive
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "0123456789");
}

TEST_F(FileUtilTest, ReadFileEmpty) {
  const std::string path = Path("empty");
  ASSERT_TRUE(WriteFileAtomic(path, std::string()).ok());
  Result<std::string> r = ReadFile(path, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->empty());
}

TEST_F(FileUtilTest, AppendLineAppends) {
  const std::string path = Path("log.jsonl");
  ASSERT_TRUE(AppendLine(path, "{\"round\":1}").ok());  // creates the file
  ASSERT_TRUE(AppendLine(path, "{\"round\":2}").ok());
  ASSERT_TRUE(AppendLine(path, "").ok());
  EXPECT_EQ(Slurp(path), "{\"round\":1}\n{\"round\":2}\n\n");
}

TEST_F(FileUtilTest, AppendLineKeepsExistingContent) {
  const std::string path = Path("log.txt");
  ASSERT_TRUE(WriteFileAtomic(path, std::string("old\n")).ok());
  ASSERT_TRUE(AppendLine(path, "new").ok());
  EXPECT_EQ(Slurp(path), "old\nnew\n");
}

TEST_F(FileUtilTest, AppendLineInMissingDirectoryFails) {
  Status st = AppendLine(Path("nope/log.txt"), "x");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Code::kIo);
}

TEST_F(FileUtilTest, MakeDirsAndPathExists) {
  const std::string deep = Path("a/b/c");
  EXPECT_FALSE(PathExists(deep));
  ASSERT_TRUE(MakeDirs(deep).ok());
  EXPECT_TRUE(fs::is_directory(deep));
  EXPECT_TRUE(PathExists(deep));
  EXPECT_TRUE(MakeDirs(deep).ok());  // idempotent
  // A path component that is a file cannot become a directory.
  ASSERT_TRUE(WriteFileAtomic(Path("file"), std::string("x")).ok());
  Status st = MakeDirs(Path("file/sub"));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Code::kIo);
}

}  // namespace
}  // namespace shoal
