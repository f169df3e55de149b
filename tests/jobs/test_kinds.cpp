#include "tests/jobs/test_kinds.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <thread>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/stop_signal.hpp"
#include "jobs/task_kind.hpp"

namespace foldfarm::jobs::testing {

namespace {

std::string fileText(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

void registerTestTaskKinds() {
  registerBuiltinTaskKinds();
  registerTaskKind("reads", TaskRunner([](const nlohmann::json& p, const std::string&) {
                     nlohmann::json read = nlohmann::json::object();
                     for (const auto& [key, path] : p.at("inputs").items())
                       if (key != "truth") read[key] = fileText(path.get<std::string>());
                     // What it read, and every parameter it ran with (its definition).
                     return TaskOutcome{0, "", nlohmann::json{{"read", read}, {"params", p}}};
                   }),
                   TaskKindTraits{true,
                                  nullptr,
                                  std::nullopt,
                                  nullptr,
                                  [](const nlohmann::json& p, InputValueReads& reads) {
                                    for (const auto& [key, path_json] : p.at("inputs").items()) {
                                      const std::string path = path_json.get<std::string>();
                                      if (!reads.first(path, key == "truth" ? "truth" : ""))
                                        continue;
                                      if (const char* log = std::getenv("FF_TEST_VALUES_LOG")) {
                                        std::ofstream(log, std::ios::app) << path << "\n";
                                      }
                                      if (fileText(path).find("NaN") != std::string::npos)
                                        throw InputError(path + ": row 0 holds NaN");
                                    }
                                  },
                                  {"truth"}});
  // Throws an Error with the message `message` (a failure as a task's code reports it).
  registerTaskKind("raises",
                   TaskRunner([](const nlohmann::json& p, const std::string&) -> TaskOutcome {
                     throw Error(p.at("message").get<std::string>());
                   }),
                   TaskKindTraits{true, nullptr, std::nullopt, nullptr, nullptr, {}});
  registerTaskKind("crash", TaskRunner([](const nlohmann::json& p, const std::string& dir) {
                     int sig = p.value("signal", 11);
                     std::string marker = dir + "/crashed-once";
                     bool always = p.value("always", false);
                     bool crash = p.value("crash", true);
                     if (crash && (always || ::access(marker.c_str(), F_OK) != 0)) {
                       int fd = ::open(marker.c_str(), O_WRONLY | O_CREAT, 0644);
                       if (fd >= 0) ::fsync(fd), ::close(fd);
                       ::signal(sig, SIG_DFL);
                       ::raise(sig);
                     }
                     return TaskOutcome{0, "", nlohmann::json{{"survived", true}}};
                   }),
                   TaskKindTraits{true, nullptr, std::nullopt, nullptr, nullptr, {}});
  // `units` units of work of `unit_s` seconds each, its progress kept in <dir>/progress after
  // each unit; a stop ends it between units (exit 75), its next attempt going on from there.
  registerTaskKind(
      "resumable", TaskRunner([](const nlohmann::json& p, const std::string& dir) {
        const std::string file = dir + "/progress";
        int done = 0;
        if (std::FILE* f = std::fopen(file.c_str(), "r")) {
          if (std::fscanf(f, "%d", &done) != 1) done = 0;
          std::fclose(f);
        }
        const int units = p.value("units", 1);
        for (; done < units; ++done) {
          if (stopRequested())
            return TaskOutcome{kTaskInterrupted, "stopped after unit " + std::to_string(done),
                               nullptr};
          std::this_thread::sleep_for(std::chrono::duration<double>(p.value("unit_s", 0.1)));
          writeFileAtomic(file, std::to_string(done + 1) + "\n");
        }
        return TaskOutcome{0, "", nlohmann::json{{"units", units}}};
      }),
      TaskKindTraits{true, nullptr, std::nullopt, nullptr, nullptr, {}});
  // Sleeps `seconds` without looking at stop requests: a task stuck where it cannot stop
  // (the worker's watchdog ends such a worker).
  registerTaskKind(
      "ignores_stop", TaskRunner([](const nlohmann::json& p, const std::string&) {
        std::this_thread::sleep_for(std::chrono::duration<double>(p.value("seconds", 0.0)));
        return TaskOutcome{0, "", nlohmann::json{{"slept", true}}};
      }),
      TaskKindTraits{true, nullptr, std::nullopt, nullptr, nullptr, {}});
  // Once: replaces the lease's holder record with another host's attempt while the task
  // holds the lock, as a network file system that dropped the lock and granted it elsewhere
  // would leave it; then finishes.
  registerTaskKind(
      "loses_lease", TaskRunner([](const nlohmann::json&, const std::string& dir) {
        const std::string marker = dir + "/lost-once";
        if (::access(marker.c_str(), F_OK) != 0) {
          int m = ::open(marker.c_str(), O_WRONLY | O_CREAT, 0644);
          if (m >= 0) ::close(m);
          const std::string rec = "{\"attempt\":99,\"host\":\"elsewhere\",\"pid\":1}\n";
          int fd = ::open((dir + "/.lease").c_str(), O_WRONLY | O_TRUNC);
          if (fd < 0 || ::write(fd, rec.data(), rec.size()) != static_cast<ssize_t>(rec.size()))
            return TaskOutcome{1, "could not rewrite the holder record", nullptr};
          ::close(fd);
        }
        return TaskOutcome{0, "", nlohmann::json{{"finished", true}}};
      }),
      TaskKindTraits{true, nullptr, std::nullopt, nullptr, nullptr, {}});
}

}  // namespace foldfarm::jobs::testing
