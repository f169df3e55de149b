#pragma once
// Progress of long work: done/total, rate and ETA. On a terminal (stderr is a TTY) it
// redraws one bar line at most 10 times a second; otherwise it writes a plain log line at
// most every `log_interval_s` seconds. finish() prints the final line.
//
// Thread-safety: update()/finish() may be called from one thread at a time.
#include <chrono>
#include <cstdint>
#include <string>

namespace foldfarm {

class Progress {
 public:
  Progress(std::string label, int64_t total, std::string unit = "it", double log_interval_s = 10.0);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Sets the absolute count of finished units; `extra` is appended (e.g. "loss=0.41").
  void update(int64_t done, const std::string& extra = "");
  void finish(const std::string& extra = "");
  // Work resumed with `done` units finished by an earlier run: they count towards done/total,
  // not towards this run's rate (nor its ETA).
  void resumedAt(int64_t done) {
    resumed_at_ = done;
    done_ = done;
  }
  // Units per second since construction (of the units done since), and seconds left at that
  // rate (-1 if unknown).
  double rate() const;
  double etaSeconds() const;
  // Disables all output (ranks other than 0, --quiet).
  void setSilent(bool silent) { silent_ = silent; }

 private:
  void render(bool final_line, const std::string& extra);

  std::string label_;
  int64_t total_;
  std::string unit_;
  double log_interval_s_;
  int64_t done_ = 0;
  int64_t resumed_at_ = 0;
  bool tty_;
  bool silent_ = false;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

// "1h02m", "3m05s", "12.3s".
std::string formatDuration(double seconds);
// A time (seconds since the epoch) as "2026-12-02 20:01:02 UTC", with `milliseconds`
// "2026-12-02 20:01:02.345 UTC" (two times within the same second told apart).
std::string formatUtcTime(double epoch_s, bool milliseconds = false);
// A rate a person reads at a glance, with two significant figures or more: per second from
// one a second up ("12.3 tasks/s"), else per minute from one a minute ("3.0 tasks/min" for
// one task every 20 s, not "0.0 tasks/s"), else per hour ("1.50 tasks/h"); "0.0 <unit>/s"
// before anything is done.
std::string formatRate(double per_second, const std::string& unit);

}  // namespace foldfarm
