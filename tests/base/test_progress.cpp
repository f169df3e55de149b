#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <thread>

#include "core/base/log.hpp"
#include "core/base/progress.hpp"

using namespace foldfarm;

TEST(Progress, DurationsReadAsSecondsMinutesOrHours) {
  EXPECT_EQ(formatDuration(12.34), "12.3s");
  EXPECT_EQ(formatDuration(61), "1m01s");
  EXPECT_EQ(formatDuration(3720), "1h02m");
  EXPECT_EQ(formatDuration(-1), "?");
  EXPECT_EQ(formatDuration(std::nan("")), "?");
}

// Times in UTC, to the second or to the millisecond (rounded, never up into the next second).
TEST(Progress, TimesReadInUtcToTheSecondOrMillisecond) {
  EXPECT_EQ(formatUtcTime(0), "1970-01-01 00:00:00 UTC");
  EXPECT_EQ(formatUtcTime(1796241662.75), "2026-12-02 20:01:02 UTC");
  EXPECT_EQ(formatUtcTime(1796241662.345, true), "2026-12-02 20:01:02.345 UTC");
  EXPECT_EQ(formatUtcTime(1796241662.9996, true), "2026-12-02 20:01:02.999 UTC");
}

// A slow campaign's rate is not shown as zero: one task every 20 s reads per minute, one every
// 40 minutes per hour.
TEST(Progress, SlowRatesReadPerMinuteOrPerHourInsteadOfZero) {
  EXPECT_EQ(formatRate(0, "tasks"), "0.0 tasks/s");
  EXPECT_EQ(formatRate(1234.56, "jets"), "1234.6 jets/s");
  EXPECT_EQ(formatRate(1.0, "tasks"), "1.0 tasks/s");
  EXPECT_EQ(formatRate(0.122, "tasks"), "7.3 tasks/min");
  EXPECT_EQ(formatRate(0.05, "tasks"), "3.0 tasks/min");
  EXPECT_EQ(formatRate(1.0 / 60, "tasks"), "1.0 tasks/min");
  EXPECT_EQ(formatRate(1.0 / 2400, "tasks"), "1.50 tasks/h");
  EXPECT_EQ(formatRate(std::numeric_limits<double>::infinity(), "chains"), "? chains/s");
  EXPECT_EQ(formatRate(-1, "chains"), "? chains/s");
}

// Resumed work: the units an earlier run finished count towards done/total, not towards this
// run's rate (before: 84 steps in 8.7 s after a resume at step 36 read as 13.9 steps/s, and
// the ETA was short by that factor).
TEST(Progress, AResumedRunsRateCountsItsOwnUnitsOnly) {
  Progress fresh("fresh", 1000, "step");
  Progress resumed("resumed", 1000, "step");
  fresh.setSilent(true);
  resumed.setSilent(true);
  resumed.resumedAt(900);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  fresh.update(50);
  resumed.update(950);
  // Side by side: the same 50 units in the same time, the same rate.
  EXPECT_GT(fresh.rate(), 0);
  EXPECT_NEAR(resumed.rate() / fresh.rate(), 1.0, 0.05);
  // What is left: 950 units at the fresh run's rate, 50 at the resumed one's.
  EXPECT_NEAR(fresh.etaSeconds() / resumed.etaSeconds(), 950.0 / 50.0, 1.0);
}

// The last line of work stopped before its end says that work is left (before: "ETA 0s" on a
// campaign stopped with 0 of 10 tasks done).
TEST(Progress, TheLastLineOfStoppedWorkHasNoZeroEta) {
  initLogging("info");
  const auto lastLine = [](int64_t done) {
    ::testing::internal::CaptureStderr();
    {
      Progress p("camp", 10, "tasks");
      p.update(done);
      p.finish(done < 10 ? "interrupted" : "");
    }
    return ::testing::internal::GetCapturedStderr();
  };
  const std::string stopped = lastLine(0);
  EXPECT_NE(stopped.find("0/10 tasks"), std::string::npos) << stopped;
  EXPECT_NE(stopped.find("ETA ?  interrupted"), std::string::npos) << stopped;
  const std::string done = lastLine(10);
  EXPECT_NE(done.find("10/10 tasks"), std::string::npos) << done;
  EXPECT_NE(done.find("ETA 0s"), std::string::npos) << done;
}
