#include "core/base/log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <mutex>

#include "core/base/error.hpp"

namespace foldfarm {
namespace {

std::mutex g_mutex;
int g_rank = -1;
std::string g_task;
std::string g_level = "info";

void applyPattern() {
  std::string ctx = hostName();
  if (g_rank >= 0) ctx += " r" + std::to_string(g_rank);
  if (!g_task.empty()) ctx += " task=" + g_task;
  // The context is literal text inside the pattern: escape '%'.
  std::string escaped;
  for (char c : ctx) {
    if (c == '%')
      escaped += "%%";
    else
      escaped += c;
  }
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] [" + escaped + "] %v");
}

}  // namespace

void initLogging(const std::string& level) {
  std::lock_guard<std::mutex> lock(g_mutex);
  static bool created = false;
  if (!created) {
    auto logger = spdlog::stderr_color_mt("foldfarm");
    spdlog::set_default_logger(logger);
    created = true;
  }
  g_level = level;
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") {
    throw InputError("unknown log level '" + level +
                     "' (use trace, debug, info, warn, error, off)");
  }
  spdlog::set_level(lvl);
  applyPattern();
}

void setLogRank(int rank) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_rank = rank;
  applyPattern();
}

void setLogTask(const std::string& task) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_task = task;
  applyPattern();
}

}  // namespace foldfarm
