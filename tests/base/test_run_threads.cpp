// runThreads: every function runs, and an exception thrown on a thread reaches the caller
// instead of ending the process through std::terminate.
#include <gtest/gtest.h>

#include <atomic>
#include <new>
#include <stdexcept>
#include <vector>

#include "core/base/run_threads.hpp"

using foldfarm::runThreads;

TEST(RunThreads, RunsEveryIndexOnce) {
  std::vector<int> seen(8, 0);
  runThreads(8, [&](int t) { seen[static_cast<size_t>(t)] += t + 1; });
  for (int t = 0; t < 8; ++t) EXPECT_EQ(seen[static_cast<size_t>(t)], t + 1);
  runThreads(0, [](int) { FAIL() << "no thread for n = 0"; });
}

TEST(RunThreads, TheFirstExceptionByIndexReachesTheCallerAfterEveryThreadFinished) {
  std::atomic<int> finished{0};
  try {
    runThreads(6, [&](int t) {
      finished.fetch_add(1);
      if (t == 2) throw std::bad_alloc();
      if (t == 4) throw std::runtime_error("thread 4");
    });
    FAIL() << "runThreads returned";
  } catch (const std::bad_alloc&) {
    // Before: the generator threads of `data synth` threw here and the process aborted
    // ("terminate called after throwing an instance of 'std::bad_alloc'", exit 134).
  }
  EXPECT_EQ(finished.load(), 6);
  EXPECT_THROW(runThreads(3,
                          [](int t) {
                            if (t == 2) throw std::runtime_error("last");
                          }),
               std::runtime_error);
}
