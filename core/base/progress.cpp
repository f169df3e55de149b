#include "core/base/progress.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>

#include "core/base/log.hpp"

namespace foldfarm {

std::string formatUtcTime(double epoch_s, bool milliseconds) {
  const double whole = std::floor(epoch_s);
  const std::time_t t = static_cast<std::time_t>(whole);
  std::tm utc{};
  ::gmtime_r(&t, &utc);
  char day[32];
  std::strftime(day, sizeof day, "%Y-%m-%d %H:%M:%S", &utc);
  char text[64];
  if (milliseconds) {
    // Rounded (a decimal fraction is rarely exact in binary), never up into the next second.
    const int ms = static_cast<int>(std::clamp(std::lround((epoch_s - whole) * 1000.0), 0L, 999L));
    std::snprintf(text, sizeof text, "%s.%03d UTC", day, ms);
  } else {
    std::snprintf(text, sizeof text, "%s UTC", day);
  }
  return text;
}

std::string formatDuration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[64];
  if (s < 60) {
    std::snprintf(buf, sizeof(buf), "%.1fs", s);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof(buf), "%dm%02ds", int(s) / 60, int(s) % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%dh%02dm", int(s) / 3600, (int(s) % 3600) / 60);
  }
  return buf;
}

std::string formatRate(double per_second, const std::string& unit) {
  if (!std::isfinite(per_second) || per_second < 0) return "? " + unit + "/s";
  char buf[128];
  if (per_second == 0 || per_second >= 1)
    std::snprintf(buf, sizeof(buf), "%.1f %s/s", per_second, unit.c_str());
  else if (per_second * 60 >= 1)
    std::snprintf(buf, sizeof(buf), "%.1f %s/min", per_second * 60, unit.c_str());
  else
    std::snprintf(buf, sizeof(buf), "%.2f %s/h", per_second * 3600, unit.c_str());
  return buf;
}

Progress::Progress(std::string label, int64_t total, std::string unit, double log_interval_s)
    : label_(std::move(label)),
      total_(total),
      unit_(std::move(unit)),
      log_interval_s_(log_interval_s),
      tty_(::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

Progress::~Progress() {
  if (tty_ && !silent_ && !finished_ && done_ > 0) std::fputc('\n', stderr);
}

double Progress::rate() const {
  double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return el > 0 ? static_cast<double>(done_ - resumed_at_) / el : 0.0;
}

double Progress::etaSeconds() const {
  double r = rate();
  if (r <= 0 || total_ <= 0) return -1;
  return (total_ - done_) / r;
}

void Progress::update(int64_t done, const std::string& extra) {
  done_ = done;
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_draw_).count();
  if (since < (tty_ ? 0.1 : log_interval_s_)) return;
  last_draw_ = now;
  render(false, extra);
}

void Progress::finish(const std::string& extra) {
  if (finished_) return;
  finished_ = true;
  render(true, extra);
}

void Progress::render(bool final_line, const std::string& extra) {
  if (silent_) return;
  double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  char stats[256];
  std::snprintf(stats, sizeof(stats), "%lld/%lld %s  %s  elapsed %s  ETA %s",
                static_cast<long long>(done_), static_cast<long long>(total_), unit_.c_str(),
                formatRate(rate(), unit_).c_str(), formatDuration(el).c_str(),
                // A last line before the end (a stop) has work left: its ETA, not 0s.
                final_line && done_ >= total_ ? "0s" : formatDuration(etaSeconds()).c_str());
  std::string tail = extra.empty() ? "" : "  " + extra;
  if (tty_) {
    const int width = 28;
    double frac = total_ > 0 ? std::min(1.0, double(done_) / double(total_)) : 0.0;
    int filled = int(frac * width);
    std::string bar(filled, '#');
    bar += std::string(width - filled, '.');
    std::fprintf(stderr, "\r\033[K%s [%s] %3.0f%% %s%s%s", label_.c_str(), bar.c_str(), frac * 100,
                 stats, tail.c_str(), final_line ? "\n" : "");
    std::fflush(stderr);
  } else {
    logInfo("{}: {}{}", label_, stats, tail);
  }
}

}  // namespace foldfarm
