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
  using Clock = std::chrono::steady_clock;
  const auto seconds = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };
  const Clock::time_point before = Clock::now();
  Progress fresh("fresh", 1000, "step");
  Progress resumed("resumed", 1000, "step");
  const Clock::time_point started = Clock::now();
  fresh.setSilent(true);
  resumed.setSilent(true);
  resumed.resumedAt(900);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  fresh.update(50);
  resumed.update(950);
  // Both did 50 units since they started: whenever each rate is read (a loaded machine may
  // pause between two reads), it lies between 50 units over the longest and over the
  // shortest time they can have taken (before: 950 units, 19 times too fast).
  const Clock::time_point reading = Clock::now();
  const double f = fresh.rate(), r = resumed.rate();
  const Clock::time_point read = Clock::now();
  for (const double rate : {f, r}) {
    EXPECT_GE(rate, 50 / seconds(before, read));
    EXPECT_LE(rate, 50 / seconds(started, reading));
  }
  // What is left: 950 units at the fresh run's rate, 50 at the resumed one's.
  const double eta_fresh = fresh.etaSeconds(), eta_resumed = resumed.etaSeconds();
  const Clock::time_point done = Clock::now();
  EXPECT_GE(eta_fresh, 950 * seconds(started, reading) / 50);
  EXPECT_LE(eta_fresh, 950 * seconds(before, done) / 50);
  EXPECT_GE(eta_resumed, 50 * seconds(started, reading) / 50);
  EXPECT_LE(eta_resumed, 50 * seconds(before, done) / 50);
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
