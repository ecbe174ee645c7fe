#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "data/dataset.h"

namespace shoal {
namespace {

// Every row comes back byte for byte, whatever its runs: all zeros, no zeros, runs longer
// than a token holds (255), a zero or non-zero at either end, rows of one byte.
TEST(PackedRowsTest, RowsComeBackExactly) {
  std::mt19937_64 rng(3);
  for (int64_t row_bytes : {1, 2, 7, 255, 256, 784, 2000}) {
    std::vector<std::vector<uint8_t>> rows;
    rows.push_back(std::vector<uint8_t>(row_bytes, 0));
    rows.push_back(std::vector<uint8_t>(row_bytes, 9));
    for (int r = 0; r < 20; ++r) {
      std::vector<uint8_t> row(row_bytes);
      // Runs of random length (up to 600) alternating between zeros and random non-zero bytes.
      bool zero = r % 2 == 0;
      for (int64_t i = 0; i < row_bytes;) {
        const int64_t run = 1 + static_cast<int64_t>(rng() % 600);
        for (int64_t k = 0; k < run && i < row_bytes; ++k, ++i) {
          row[i] = zero ? 0 : static_cast<uint8_t>(1 + rng() % 255);
        }
        zero = !zero;
      }
      rows.push_back(row);
    }
    std::vector<uint8_t> flat;
    for (const auto& row : rows) flat.insert(flat.end(), row.begin(), row.end());
    const data::PackedRows packed =
        data::PackedRows::Pack(flat.data(), static_cast<int64_t>(rows.size()), row_bytes);
    ASSERT_EQ(packed.rows(), static_cast<int64_t>(rows.size()));
    for (size_t r = 0; r < rows.size(); ++r) {
      std::vector<uint8_t> out(row_bytes + 1, 0xAB);
      packed.Unpack(static_cast<int64_t>(r), out.data());
      EXPECT_EQ(std::vector<uint8_t>(out.begin(), out.end() - 1), rows[r])
          << "row " << r << " of " << row_bytes << " bytes";
      EXPECT_EQ(out.back(), 0xAB) << "wrote past the row";
    }
  }
}

// A dataset's images packed: the same values as before (FloatFeatures), in less memory when
// half the pixels are zero, and nothing of `pixels` kept.
TEST(PackedRowsTest, PackedImagesHoldTheSameValuesInLessMemory) {
  data::Dataset d;
  d.sample_shape = {1, 28, 28};
  std::mt19937_64 rng(4);
  for (int i = 0; i < 50; ++i) {
    for (int p = 0; p < 784; ++p) {
      const bool background = (p % 28) < 7 || (p % 28) >= 21;  // a 14-pixel-wide object
      d.pixels.push_back(background ? 0 : static_cast<uint8_t>(rng() % 256));
    }
    d.labels.push_back(i % 10);
  }
  const std::vector<float> before = d.FloatFeatures();
  const size_t raw = d.pixels.size();
  d.PackImages();
  EXPECT_TRUE(d.is_packed());
  EXPECT_TRUE(d.is_images());
  EXPECT_EQ(d.pixels.capacity(), 0u);
  EXPECT_EQ(d.FloatFeatures(), before);
  EXPECT_LT(d.packed.bytes(), raw * 6 / 10) << d.packed.bytes() << " of " << raw;
}

}  // namespace
}  // namespace shoal
