#include "data/csv.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace shoal {
namespace {

namespace fs = std::filesystem;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class CsvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::path(::testing::TempDir()) / "csv_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = (fs::path(dir_) / name).string();
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    return path;
  }
  // Expects ReadCsv to fail with InvalidArgument and a message containing every needle.
  void ExpectError(const std::string& text, const std::vector<std::string>& needles,
                   const std::string& label = "label") {
    const std::string path = Write("bad.csv", text);
    Result<data::CsvTable> r = data::ReadCsv(path, label);
    ASSERT_FALSE(r.ok()) << "accepted: " << text;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << r.status().ToString();
    EXPECT_TRUE(Contains(r.status().message(), path)) << r.status().message();
    for (const auto& needle : needles) {
      EXPECT_TRUE(Contains(r.status().message(), needle))
          << "'" << needle << "' not in: " << r.status().message();
    }
    // ReadCsvLines validates the same way.
    EXPECT_FALSE(data::ReadCsvLines(path, label).ok());
  }

  std::string dir_;
};

TEST_F(CsvTest, ReadsGoodFile) {
  const std::string path = Write("good.csv",
                                 "sepal, width ,label,petal\n"
                                 "1.5,2,0,-3e2\n"
                                 "\n"
                                 " 4 ,\t5.25,12, +6\n"
                                 "0.0,1e-3,3,7.\n");
  Result<data::CsvTable> r = data::ReadCsv(path, "label");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->feature_names, (std::vector<std::string>{"sepal", "width", "petal"}));
  EXPECT_EQ(r->labels, (std::vector<int64_t>{0, 12, 3}));
  EXPECT_EQ(r->features,
            (std::vector<float>{1.5f, 2.0f, -300.0f, 4.0f, 5.25f, 6.0f, 0.0f, 0.001f, 7.0f}));
}

TEST_F(CsvTest, AcceptsCrlfBomAndNoTrailingNewline) {
  const std::string path = Write("crlf.csv",
                                 "\xEF\xBB\xBF"
                                 "label,x\r\n1,0.5\r\n2,1.5");
  Result<data::CsvTable> r = data::ReadCsv(path, "label");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->feature_names, (std::vector<std::string>{"x"}));
  EXPECT_EQ(r->labels, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(r->features, (std::vector<float>{0.5f, 1.5f}));
}

TEST_F(CsvTest, HeaderOnlyGivesEmptyTable) {
  Result<data::CsvTable> r = data::ReadCsv(Write("h.csv", "a,b,label\n"), "label");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->feature_names.size(), 2u);
  EXPECT_TRUE(r->features.empty());
  EXPECT_TRUE(r->labels.empty());
}

TEST_F(CsvTest, MissingLabelColumn) {
  ExpectError("a,b,target\n1,2,3\n", {":1:", "no column named 'label'", "'target'"});
}

TEST_F(CsvTest, DuplicateLabelColumn) {
  ExpectError("label,a,label\n1,2,3\n", {":1:9:", "more than once"});
}

TEST_F(CsvTest, NoFeatureColumns) { ExpectError("label\n1\n", {":1:", "no feature columns"}); }

TEST_F(CsvTest, MalformedValueNamesLineColumnAndHeader) {
  const std::string path = Write("bad.csv", "a,b,label\n1,2,0\n1,abc,1\n");
  Result<data::CsvTable> r = data::ReadCsv(path, "label");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(r.status().message(), path + ":3:3: column 'b': not a number: 'abc'");
}

TEST_F(CsvTest, RejectsNonFiniteAndEmptyValues) {
  ExpectError("a,b,label\n1,2,0\n3,nan,1\n", {":3:3:", "column 'b'", "non-finite"});
  ExpectError("a,b,label\n-inf,2,0\n", {":2:1:", "column 'a'", "non-finite"});
  ExpectError("a,b,label\n1,Infinity,0\n", {":2:3:", "column 'b'", "non-finite"});
  ExpectError("a,b,label\n1,,0\n", {":2:3:", "column 'b'", "empty value"});
  ExpectError("a,b,label\n1,  ,0\n", {":2:3:", "column 'b'", "empty value"});
  ExpectError("a,b,label\n1,1e400,0\n", {":2:3:", "column 'b'", "out of range"});
  ExpectError("a,b,label\n1,1e39,0\n", {":2:3:", "column 'b'", "float range"});
  ExpectError("a,b,label\n1,0x10,0\n", {":2:3:", "column 'b'", "not a number"});
  ExpectError("a,b,label\n1,\"2\",0\n", {":2:3:", "column 'b'", "not a number"});
  ExpectError("a,b,label\n1,2 3,0\n", {":2:3:", "column 'b'", "not a number"});
}

TEST_F(CsvTest, RejectsBadLabels) {
  ExpectError("a,label\n1,-1\n", {":2:3:", "label column 'label'", "'-1'"});
  ExpectError("a,label\n1,2.5\n", {":2:3:", "label column 'label'", "'2.5'"});
  ExpectError("a,label\n1,\n", {":2:3:", "label column 'label'"});
  ExpectError("a,label\n1,cat\n", {":2:3:", "label column 'label'", "'cat'"});
  ExpectError("a,label\n1,65536\n", {":2:3:", "0..65535"});
  ExpectError("a,label\n1,99999999999999999999999\n", {":2:3:", "label column 'label'"});
}

TEST_F(CsvTest, RaggedRows) {
  ExpectError("a,b,label\n1,2,0\n1,2\n", {":3:4:", "expected 3 fields", "got 2"});
  ExpectError("a,b,label\n1,2,0,9\n", {":2:7:", "expected 3 fields", "got more"});
}

TEST_F(CsvTest, EmptyFile) {
  ExpectError("", {"empty file"});
  ExpectError("\n  \n\n", {"empty file"});
}

TEST_F(CsvTest, MissingFileIsNotFound) {
  const std::string path = (fs::path(dir_) / "none.csv").string();
  Result<data::CsvTable> r = data::ReadCsv(path, "label");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_TRUE(Contains(r.status().message(), path));
}

TEST_F(CsvTest, CustomLabelColumnName) {
  Result<data::CsvTable> r = data::ReadCsv(Write("c.csv", "y,x1,x2\n3,1,2\n"), "y");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->labels, (std::vector<int64_t>{3}));
  EXPECT_EQ(r->feature_names, (std::vector<std::string>{"x1", "x2"}));
}

TEST_F(CsvTest, ReadCsvLinesKeepsOriginalText) {
  const std::string path = Write("lines.csv",
                                 "a, b ,label\r\n"
                                 "1.50, 2 ,3\r\n"
                                 "\r\n"
                                 "0007,1e0,+4\r\n");
  Result<data::CsvLines> r = data::ReadCsvLines(path, "label");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->header, "a, b ,label");
  EXPECT_EQ(r->lines, (std::vector<std::string>{"1.50, 2 ,3", "0007,1e0,+4"}));
  EXPECT_EQ(r->labels, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(r->line_ending, "\r\n");
}

TEST_F(CsvTest, LoadCsvDatasetShapesAndLimit) {
  const std::string path = Write("ds.csv", "f1,f2,label\n1,2,0\n3,4,1\n5,6,2\n");
  Result<data::Dataset> r = data::LoadCsvDataset(path, "label");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->sample_shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(r->size(), 3);
  EXPECT_EQ(r->num_classes(), 3);
  r = data::LoadCsvDataset(path, "label", 2);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->size(), 2);
  EXPECT_EQ(r->features, (std::vector<float>{1, 2, 3, 4}));
  r = data::LoadCsvDataset(Write("empty.csv", "f1,label\n"), "label");
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(data::LoadCsvDataset(path, "label", -2).status().code(), Code::kInvalidArgument);
}

// The one entry point the worker and the central evaluator load through: it reads what the
// format's own loader reads, and names the known formats for any other.
TEST_F(CsvTest, LoadDatasetDispatchesOnTheFormat) {
  const std::string path = Write("silo.csv", "a,label,b\n1,0,2\n3,1,4\n5,1,6\n");
  auto direct = data::LoadCsvDataset(path, "label", 2);
  ASSERT_TRUE(direct.ok()) << direct.status().ToString();
  auto loaded = data::LoadDataset({"csv", path, "", "label", 2});
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->size(), 2);
  EXPECT_EQ(loaded->sample_shape, direct->sample_shape);
  EXPECT_EQ(loaded->labels, direct->labels);
  EXPECT_EQ(loaded->features, direct->features);

  // idx reads a directory: a CSV file is not one, and the error comes from the IDX loader.
  auto as_idx = data::LoadDataset({"idx", path, "train", "", 0});
  EXPECT_FALSE(as_idx.ok());

  auto unknown = data::LoadDataset({"parquet", path, "", "label", 0});
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(unknown.status().message(), "parquet")) << unknown.status().message();
  EXPECT_TRUE(Contains(unknown.status().message(), "idx, csv")) << unknown.status().message();
  EXPECT_TRUE(data::IsDataFormat("csv"));
  EXPECT_FALSE(data::IsDataFormat("none"));
}

}  // namespace
}  // namespace shoal
