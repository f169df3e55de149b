// LruCache keeps the most recently used values within its capacity.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "core/base/lru_cache.hpp"

using foldfarm::LruCache;

TEST(LruCache, EvictsTheLeastRecentlyUsedBeyondItsCapacity) {
  LruCache<std::string, int> c(3);
  c.put("mc_a", 1);
  c.put("mc_b", 2);
  c.put("data", 3);
  ASSERT_NE(c.find("mc_a"), nullptr);  // mc_a is now the most recent: mc_b is the oldest
  c.put("mc_c", 4);
  EXPECT_EQ(c.size(), 3u);
  EXPECT_EQ(c.find("mc_b"), nullptr);
  ASSERT_NE(c.find("mc_a"), nullptr);
  EXPECT_EQ(*c.find("mc_a"), 1);
  ASSERT_NE(c.find("data"), nullptr);
  // A value used by every task (data) outlives the values that rotate (mc_*).
  for (int k = 0; k < 10; ++k) {
    c.put("mc_" + std::to_string(k), k);
    ASSERT_NE(c.find("data"), nullptr) << k;
  }
  EXPECT_EQ(c.size(), 3u);
}

TEST(LruCache, PutReplacesAndEraseIfRemovesByKey) {
  LruCache<std::string, std::shared_ptr<int>> c(4);
  c.put("f.h5|1", std::make_shared<int>(1));
  c.put("g.h5|1", std::make_shared<int>(2));
  c.put("f.h5|1", std::make_shared<int>(5));
  EXPECT_EQ(c.size(), 2u);
  EXPECT_EQ(**c.find("f.h5|1"), 5);
  c.eraseIf([](const std::string& k) { return k.rfind("f.h5|", 0) == 0; });
  EXPECT_EQ(c.find("f.h5|1"), nullptr);
  EXPECT_EQ(c.size(), 1u);
  c.clear();
  EXPECT_EQ(c.size(), 0u);
  LruCache<int, int> one(0);  // a capacity below 1 keeps one value
  one.put(1, 1);
  one.put(2, 2);
  EXPECT_EQ(one.size(), 1u);
  EXPECT_NE(one.find(2), nullptr);
}
