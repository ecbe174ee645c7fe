#include "base/sha256.h"

#include <gtest/gtest.h>

#include <string>

namespace shoal {
namespace {

TEST(Sha256Test, CopyContinuesFromTheSameState) {
  const std::string prefix(1000, 'p');
  Sha256 shared;
  shared.Update(prefix.data(), prefix.size());
  Sha256 a = shared.Copy();
  Sha256 b = shared.Copy();
  a.Update("tail-a", 6);
  b.Update("tail-b", 6);
  const std::string whole_a = prefix + "tail-a";
  const std::string whole_b = prefix + "tail-b";
  EXPECT_EQ(a.Finish(), Sha256::Of(whole_a.data(), whole_a.size()));
  EXPECT_EQ(b.Finish(), Sha256::Of(whole_b.data(), whole_b.size()));
  // The original is untouched by its copies.
  EXPECT_EQ(shared.Finish(), Sha256::Of(prefix.data(), prefix.size()));
}

TEST(Sha256Test, KnownDigest) {
  EXPECT_EQ(ToHex(Sha256::Of("abc", 3)),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace shoal
