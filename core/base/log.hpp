#pragma once
// Logging through spdlog. Every line carries time, level, host and, when set, the rank
// and task: "[2026-11-22 12:00:00.123] [info] [node17 r3 task=r0007m1] message".
// Log to stderr; stdout is reserved for command results (--json output, rendered scripts).
#include <spdlog/spdlog.h>

#include <string>

namespace foldfarm {

// Level names: trace, debug, info, warn, error, off. Safe to call again (re-applies).
void initLogging(const std::string& level = "info");
// Sets the rank shown in every log line (-1: none) and the task (empty: none).
void setLogRank(int rank);
void setLogTask(const std::string& task);

template <typename... Args>
void logInfo(spdlog::format_string_t<Args...> fmt, Args&&... args) {
  spdlog::info(fmt, std::forward<Args>(args)...);
}
template <typename... Args>
void logWarn(spdlog::format_string_t<Args...> fmt, Args&&... args) {
  spdlog::warn(fmt, std::forward<Args>(args)...);
}
template <typename... Args>
void logError(spdlog::format_string_t<Args...> fmt, Args&&... args) {
  spdlog::error(fmt, std::forward<Args>(args)...);
}
template <typename... Args>
void logDebug(spdlog::format_string_t<Args...> fmt, Args&&... args) {
  spdlog::debug(fmt, std::forward<Args>(args)...);
}

}  // namespace foldfarm
