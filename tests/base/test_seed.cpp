#include <gtest/gtest.h>

#include <set>

#include "core/base/seed.hpp"

using foldfarm::deriveSeed;

TEST(Seed, DeterministicAndDistinct) {
  EXPECT_EQ(deriveSeed({42, 1, 7}), deriveSeed({42, 1, 7}));
  std::set<uint64_t> seen;
  for (uint64_t r = 0; r < 200; ++r)
    for (uint64_t m = 0; m < 5; ++m) seen.insert(deriveSeed({42, r, m}));
  EXPECT_EQ(seen.size(), 1000u);
  // Order of keys matters: (r, m) and (m, r) are different members.
  EXPECT_NE(deriveSeed({42, 1, 2}), deriveSeed({42, 2, 1}));
}
