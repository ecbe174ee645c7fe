#include "data/partition.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "data/csv.h"
#include "data/dataset.h"
#include "data/idx.h"

namespace shoal {
namespace {

namespace fs = std::filesystem;

using Parts = std::vector<std::vector<int64_t>>;

std::vector<int64_t> BalancedLabels(int64_t n, int64_t classes) {
  std::vector<int64_t> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) labels[static_cast<size_t>(i)] = i % classes;
  return labels;
}

data::PartitionOptions Options(int workers, data::PartitionScheme scheme, uint64_t seed,
                               double alpha = 0.5) {
  data::PartitionOptions o;
  o.workers = workers;
  o.scheme = scheme;
  o.seed = seed;
  o.alpha = alpha;
  return o;
}

Parts MustPartition(const std::vector<int64_t>& labels, const data::PartitionOptions& opts) {
  Result<Parts> r = data::PartitionIndices(labels, opts);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : Parts{};
}

// Every index in [0, n) appears in exactly one part; parts are sorted and non-empty.
void ExpectDisjointCover(const Parts& parts, int64_t n) {
  std::vector<int64_t> all;
  for (const auto& p : parts) {
    EXPECT_FALSE(p.empty());
    EXPECT_TRUE(std::is_sorted(p.begin(), p.end()));
    all.insert(all.end(), p.begin(), p.end());
  }
  ASSERT_EQ(static_cast<int64_t>(all.size()), n);
  std::sort(all.begin(), all.end());
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(all[static_cast<size_t>(i)], i);
}

// Share of the most frequent class in each part.
std::vector<double> MaxClassShares(const Parts& parts, const std::vector<int64_t>& labels,
                                   int64_t classes) {
  std::vector<double> shares;
  for (const auto& p : parts) {
    std::vector<int64_t> h(static_cast<size_t>(classes), 0);
    for (int64_t i : p) ++h[static_cast<size_t>(labels[static_cast<size_t>(i)])];
    shares.push_back(static_cast<double>(*std::max_element(h.begin(), h.end())) /
                     static_cast<double>(p.size()));
  }
  return shares;
}

TEST(PartitionIndicesTest, DisjointCoverForBothSchemes) {
  const std::vector<int64_t> labels = BalancedLabels(997, 10);
  for (data::PartitionScheme scheme :
       {data::PartitionScheme::kIid, data::PartitionScheme::kDirichlet}) {
    for (int workers : {1, 2, 3, 7, 50}) {
      SCOPED_TRACE(std::string(data::PartitionSchemeName(scheme)) +
                   " workers=" + std::to_string(workers));
      const Parts parts = MustPartition(labels, Options(workers, scheme, 11));
      ASSERT_EQ(parts.size(), static_cast<size_t>(workers));
      ExpectDisjointCover(parts, 997);
    }
  }
}

TEST(PartitionIndicesTest, DeterministicForASeed) {
  const std::vector<int64_t> labels = BalancedLabels(2000, 10);
  for (data::PartitionScheme scheme :
       {data::PartitionScheme::kIid, data::PartitionScheme::kDirichlet}) {
    SCOPED_TRACE(data::PartitionSchemeName(scheme));
    const Parts a = MustPartition(labels, Options(4, scheme, 7));
    const Parts b = MustPartition(labels, Options(4, scheme, 7));
    const Parts c = MustPartition(labels, Options(4, scheme, 8));
    EXPECT_EQ(a, b);
    EXPECT_NE(a, c);
  }
}

TEST(PartitionIndicesTest, IidSizesDifferByAtMostOne) {
  const std::vector<int64_t> labels = BalancedLabels(1003, 3);
  for (int workers : {1, 4, 7, 10, 1003}) {
    const Parts parts = MustPartition(labels, Options(workers, data::PartitionScheme::kIid, 3));
    size_t lo = SIZE_MAX, hi = 0;
    for (const auto& p : parts) {
      lo = std::min(lo, p.size());
      hi = std::max(hi, p.size());
    }
    EXPECT_LE(hi - lo, 1u) << "workers=" << workers;
  }
}

TEST(PartitionIndicesTest, IidKeepsClassSharesBalanced) {
  const std::vector<int64_t> labels = BalancedLabels(5000, 10);
  for (uint64_t seed : {0, 1, 2}) {
    const Parts parts = MustPartition(labels, Options(5, data::PartitionScheme::kIid, seed));
    for (const auto& p : parts) {
      std::vector<int64_t> h(10, 0);
      for (int64_t i : p) ++h[static_cast<size_t>(labels[static_cast<size_t>(i)])];
      for (int64_t count : h) {
        EXPECT_NEAR(static_cast<double>(count) / static_cast<double>(p.size()), 0.1, 0.04);
      }
    }
  }
}

double Mean(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v) sum += x;
  return v.empty() ? 0 : sum / static_cast<double>(v.size());
}

// Average over classes of the share of that class held by the worker holding most of it.
double MeanClassConcentration(const Parts& parts, const std::vector<int64_t>& labels,
                              int64_t classes) {
  std::vector<std::vector<int64_t>> counts(static_cast<size_t>(classes),
                                           std::vector<int64_t>(parts.size(), 0));
  for (size_t w = 0; w < parts.size(); ++w) {
    for (int64_t i : parts[w]) ++counts[static_cast<size_t>(labels[static_cast<size_t>(i)])][w];
  }
  std::vector<double> shares;
  for (const auto& c : counts) {
    int64_t total = 0;
    for (int64_t x : c) total += x;
    shares.push_back(static_cast<double>(*std::max_element(c.begin(), c.end())) /
                     static_cast<double>(total));
  }
  return Mean(shares);
}

// Dir(0.1) does not promise that *every* worker is dominated by one class (a worker can collect
// the bulk of 3-4 classes, giving a top share near 0.25), so the test checks robust aggregates
// over 10 seeds: the average top-class share per worker, the most skewed worker, and how much
// of each class lands on a single worker. IID on the same labels stays near 0.1 / 0.2.
// (Over 200 seeds the worst values seen were 0.37 / 0.47 / 0.64 against thresholds 0.3 / 0.4 /
// 0.5.)
TEST(PartitionIndicesTest, DirichletSmallAlphaIsSkewed) {
  const std::vector<int64_t> labels = BalancedLabels(5000, 10);
  for (uint64_t seed = 0; seed < 10; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    const Parts parts =
        MustPartition(labels, Options(5, data::PartitionScheme::kDirichlet, seed, 0.1));
    ExpectDisjointCover(parts, 5000);
    const std::vector<double> shares = MaxClassShares(parts, labels, 10);
    EXPECT_GT(Mean(shares), 0.3);
    EXPECT_GT(*std::max_element(shares.begin(), shares.end()), 0.4);
    EXPECT_GT(MeanClassConcentration(parts, labels, 10), 0.5);

    const Parts iid = MustPartition(labels, Options(5, data::PartitionScheme::kIid, seed));
    for (double share : MaxClassShares(iid, labels, 10)) EXPECT_LT(share, 0.14);
    EXPECT_LT(MeanClassConcentration(iid, labels, 10), 0.3);
  }
}

TEST(PartitionIndicesTest, DirichletLeavesNoWorkerEmpty) {
  // Tiny alpha concentrates each class on one worker; 10 workers, 3 classes, 12 samples.
  const std::vector<int64_t> labels = BalancedLabels(12, 3);
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const Parts parts =
        MustPartition(labels, Options(10, data::PartitionScheme::kDirichlet, seed, 0.01));
    ExpectDisjointCover(parts, 12);
  }
  // workers == N: everyone gets exactly one sample.
  const Parts parts =
      MustPartition(labels, Options(12, data::PartitionScheme::kDirichlet, 5, 0.05));
  for (const auto& p : parts) EXPECT_EQ(p.size(), 1u);
}

TEST(PartitionIndicesTest, LimitUsesOnlyFirstSamples) {
  const std::vector<int64_t> labels = BalancedLabels(1000, 10);
  data::PartitionOptions opts = Options(3, data::PartitionScheme::kDirichlet, 1);
  opts.limit = 100;
  ExpectDisjointCover(MustPartition(labels, opts), 100);
  opts.limit = 5000;  // larger than N: all samples
  ExpectDisjointCover(MustPartition(labels, opts), 1000);
}

TEST(PartitionIndicesTest, RejectsBadOptions) {
  const std::vector<int64_t> labels = BalancedLabels(10, 2);
  auto code = [&](data::PartitionOptions o, const std::vector<int64_t>& l) {
    return data::PartitionIndices(l, o).status().code();
  };
  EXPECT_EQ(code(Options(0, data::PartitionScheme::kIid, 0), labels), Code::kInvalidArgument);
  EXPECT_EQ(code(Options(-2, data::PartitionScheme::kIid, 0), labels), Code::kInvalidArgument);
  EXPECT_EQ(code(Options(11, data::PartitionScheme::kIid, 0), labels), Code::kInvalidArgument);
  EXPECT_EQ(code(Options(1, data::PartitionScheme::kIid, 0), {}), Code::kInvalidArgument);
  EXPECT_EQ(code(Options(2, data::PartitionScheme::kDirichlet, 0, 0.0), labels),
            Code::kInvalidArgument);
  EXPECT_EQ(code(Options(2, data::PartitionScheme::kDirichlet, 0, -1.0), labels),
            Code::kInvalidArgument);
  EXPECT_EQ(code(Options(2, data::PartitionScheme::kDirichlet, 0, std::nan("")), labels),
            Code::kInvalidArgument);
  EXPECT_EQ(code(Options(2, data::PartitionScheme::kDirichlet, 0, INFINITY), labels),
            Code::kInvalidArgument);
  EXPECT_TRUE(data::PartitionIndices(labels, Options(2, data::PartitionScheme::kIid, 0, 0.0)).ok())
      << "alpha is irrelevant to iid";
  data::PartitionOptions neg_limit = Options(2, data::PartitionScheme::kIid, 0);
  neg_limit.limit = -1;
  EXPECT_EQ(code(neg_limit, labels), Code::kInvalidArgument);
  data::PartitionOptions limited = Options(4, data::PartitionScheme::kIid, 0);
  limited.limit = 3;
  Result<Parts> r = data::PartitionIndices(labels, limited);
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find("only 3 samples"), std::string::npos) << r.status().message();
  EXPECT_EQ(code(Options(2, data::PartitionScheme::kIid, 0), {0, 1, -1}), Code::kInvalidArgument);
}

TEST(PartitionIndicesTest, SchemeNames) {
  EXPECT_STREQ(data::PartitionSchemeName(data::PartitionScheme::kIid), "iid");
  EXPECT_STREQ(data::PartitionSchemeName(data::PartitionScheme::kDirichlet), "dirichlet");
  EXPECT_EQ(*data::ParsePartitionScheme("dirichlet"), data::PartitionScheme::kDirichlet);
  EXPECT_EQ(*data::ParsePartitionScheme("iid"), data::PartitionScheme::kIid);
  EXPECT_EQ(data::ParsePartitionScheme("IID ").status().code(), Code::kInvalidArgument);
}

class PartitionDatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::path(::testing::TempDir()) / "partition_test_XXXXXX").string();
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

TEST_F(PartitionDatasetTest, IdxDirectoryEndToEnd) {
  // 60 images of 4x3 whose first pixel is the sample index; labels i % 5. Images gzipped,
  // labels plain: each output file must keep its own compression.
  const int64_t n = 60;
  data::IdxArray images;
  images.dims = {n, 4, 3};
  data::IdxArray labels;
  labels.dims = {n};
  for (int64_t i = 0; i < n; ++i) {
    images.data.push_back(static_cast<uint8_t>(i));
    images.data.insert(images.data.end(), 11, static_cast<uint8_t>(200));
    labels.data.push_back(static_cast<uint8_t>(i % 5));
  }
  const std::string src = Path("src");
  fs::create_directories(src);
  ASSERT_TRUE(data::WriteIdx(src + "/train-images-idx3-ubyte.gz", images, true).ok());
  ASSERT_TRUE(data::WriteIdx(src + "/train-labels-idx1-ubyte", labels, false).ok());
  const std::string out = Path("out/nested");
  // A stale plain copy in silo-1 would shadow nothing (gz is preferred) but must not linger.
  fs::create_directories(out + "/silo-1");
  std::ofstream(out + "/silo-1/train-images-idx3-ubyte") << "stale";

  data::PartitionOptions opts = Options(3, data::PartitionScheme::kDirichlet, 4, 0.5);
  Result<std::vector<data::SiloReport>> r = data::PartitionDataset(src, out, opts);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 3u);
  EXPECT_FALSE(fs::exists(out + "/silo-1/train-images-idx3-ubyte"));

  const Parts expected =
      MustPartition(std::vector<int64_t>(labels.data.begin(), labels.data.end()), opts);
  int64_t total = 0;
  for (size_t w = 0; w < 3; ++w) {
    const data::SiloReport& rep = (*r)[w];
    const std::string silo = out + "/silo-" + std::to_string(w + 1);
    EXPECT_EQ(rep.dir, silo);
    EXPECT_TRUE(fs::exists(silo + "/train-images-idx3-ubyte.gz"));
    EXPECT_TRUE(fs::exists(silo + "/train-labels-idx1-ubyte"));
    EXPECT_FALSE(fs::exists(silo + "/train-labels-idx1-ubyte.gz"));
    Result<data::Dataset> ds = data::LoadIdxDataset(silo, "train");
    ASSERT_TRUE(ds.ok()) << ds.status().ToString();
    EXPECT_EQ(ds->size(), rep.size);
    EXPECT_EQ(ds->sample_shape, (std::vector<int64_t>{1, 4, 3}));
    ASSERT_EQ(rep.label_histogram.size(), 5u);
    std::vector<int64_t> h(5, 0);
    std::vector<int64_t> indices;
    for (int64_t k = 0; k < ds->size(); ++k) {
      const int64_t original = ds->pixels[static_cast<size_t>(k * 12)];
      indices.push_back(original);
      EXPECT_EQ(ds->labels[static_cast<size_t>(k)], original % 5);
      EXPECT_EQ(ds->pixels[static_cast<size_t>(k * 12 + 1)], 200);
      ++h[static_cast<size_t>(ds->labels[static_cast<size_t>(k)])];
    }
    EXPECT_EQ(indices, expected[w]);
    EXPECT_EQ(rep.label_histogram, h);
    total += rep.size;
  }
  EXPECT_EQ(total, n);
}

TEST_F(PartitionDatasetTest, IdxLimitAndPlainFiles) {
  data::IdxArray images;
  images.dims = {40, 2, 2};
  images.data.assign(160, 9);
  data::IdxArray labels;
  labels.dims = {40};
  for (int i = 0; i < 40; ++i) labels.data.push_back(static_cast<uint8_t>(i % 4));
  const std::string src = Path("src");
  fs::create_directories(src);
  ASSERT_TRUE(data::WriteIdx(src + "/train-images-idx3-ubyte", images, false).ok());
  ASSERT_TRUE(data::WriteIdx(src + "/train-labels-idx1-ubyte", labels, false).ok());
  data::PartitionOptions opts = Options(2, data::PartitionScheme::kIid, 0);
  opts.limit = 10;
  Result<std::vector<data::SiloReport>> r = data::PartitionDataset(src, Path("out"), opts);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)[0].size + (*r)[1].size, 10);
  EXPECT_EQ((*r)[0].size, 5);
  EXPECT_TRUE(fs::exists(Path("out/silo-2/train-images-idx3-ubyte")));
  EXPECT_FALSE(fs::exists(Path("out/silo-2/train-images-idx3-ubyte.gz")));
}

TEST_F(PartitionDatasetTest, CsvEndToEndKeepsLines) {
  std::ostringstream text;
  text << "x1, x2 ,label\n";
  std::vector<std::string> lines;
  for (int i = 0; i < 25; ++i) {
    std::string line =
        std::to_string(i) + ".50, " + std::to_string(i * 2) + " ," + std::to_string(i % 3);
    lines.push_back(line);
    text << line << "\n";
  }
  const std::string csv = Path("table.csv");
  std::ofstream(csv) << text.str();

  data::PartitionOptions opts = Options(4, data::PartitionScheme::kIid, 9);
  Result<std::vector<data::SiloReport>> r = data::PartitionDataset(csv, Path("out"), opts);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 4u);
  std::vector<std::string> seen;
  int64_t total = 0;
  for (size_t w = 0; w < 4; ++w) {
    const std::string file = Path("out/silo-" + std::to_string(w + 1) + "/data.csv");
    std::ifstream in(file);
    std::string line;
    ASSERT_TRUE(std::getline(in, line));
    EXPECT_EQ(line, "x1, x2 ,label");
    int64_t count = 0;
    while (std::getline(in, line)) {
      seen.push_back(line);
      ++count;
    }
    EXPECT_EQ(count, (*r)[w].size);
    EXPECT_EQ((*r)[w].label_histogram.size(), 3u);
    Result<data::Dataset> ds = data::LoadCsvDataset(file, "label");
    ASSERT_TRUE(ds.ok()) << ds.status().ToString();
    EXPECT_EQ(ds->size(), count);
    total += count;
  }
  EXPECT_EQ(total, 25);
  std::sort(seen.begin(), seen.end());
  std::sort(lines.begin(), lines.end());
  EXPECT_EQ(seen, lines);
}

TEST_F(PartitionDatasetTest, CsvCustomLabelColumnAndCrlf) {
  const std::string csv = Path("t.CSV");
  std::ofstream(csv, std::ios::binary) << "cls,f\r\n0,1\r\n1,2\r\n0,3\r\n";
  Result<std::vector<data::SiloReport>> r = data::PartitionDataset(
      csv, Path("out"), Options(3, data::PartitionScheme::kDirichlet, 1), "cls");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::ifstream in(Path("out/silo-1/data.csv"), std::ios::binary);
  const std::string body((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(body.substr(0, 7), "cls,f\r\n");
  EXPECT_EQ(body.back(), '\n');
  EXPECT_EQ(body[body.size() - 2], '\r');
}

TEST_F(PartitionDatasetTest, ErrorsNameTheSource) {
  Result<std::vector<data::SiloReport>> r = data::PartitionDataset(
      Path("missing"), Path("out"), Options(2, data::PartitionScheme::kIid, 0));
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_NE(r.status().message().find(Path("missing")), std::string::npos);

  const std::string txt = Path("data.txt");
  std::ofstream(txt) << "a,label\n1,2\n";
  r = data::PartitionDataset(txt, Path("out"), Options(2, data::PartitionScheme::kIid, 0));
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find(txt), std::string::npos);

  const std::string csv = Path("small.csv");
  std::ofstream(csv) << "a,label\n1,2\n3,4\n";
  r = data::PartitionDataset(csv, Path("out"), Options(3, data::PartitionScheme::kIid, 0));
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find(csv), std::string::npos) << r.status().message();
  EXPECT_FALSE(fs::exists(Path("out")));

  std::ofstream(csv) << "a,label\n1,x\n";
  r = data::PartitionDataset(csv, Path("out"), Options(1, data::PartitionScheme::kIid, 0));
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find(csv + ":2:3:"), std::string::npos) << r.status().message();

  // An IDX directory without the files.
  fs::create_directories(Path("emptydir"));
  r = data::PartitionDataset(Path("emptydir"), Path("out"),
                             Options(1, data::PartitionScheme::kIid, 0));
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_NE(r.status().message().find("train-images-idx3-ubyte"), std::string::npos);

  // Output path occupied by a file.
  std::ofstream(Path("blocker")) << "x";
  std::ofstream(csv) << "a,label\n1,2\n3,4\n";
  r = data::PartitionDataset(csv, Path("blocker"), Options(1, data::PartitionScheme::kIid, 0));
  EXPECT_EQ(r.status().code(), Code::kIo);
  EXPECT_NE(r.status().message().find(Path("blocker")), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace shoal
