#include "tests/jobs/test_kinds.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "jobs/task_kind.hpp"

namespace foldfarm::jobs::testing {

void registerTestTaskKinds() {
  registerBuiltinTaskKinds();
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
                   TaskKindTraits{true, nullptr, std::nullopt, nullptr, nullptr});
  // Sleeps `seconds` without looking at stop requests: a task stuck where it cannot stop
  // (the worker's watchdog ends such a worker).
  registerTaskKind(
      "ignores_stop", TaskRunner([](const nlohmann::json& p, const std::string&) {
        std::this_thread::sleep_for(std::chrono::duration<double>(p.value("seconds", 0.0)));
        return TaskOutcome{0, "", nlohmann::json{{"slept", true}}};
      }),
      TaskKindTraits{true, nullptr, std::nullopt, nullptr, nullptr});
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
      TaskKindTraits{true, nullptr, std::nullopt, nullptr, nullptr});
}

}  // namespace foldfarm::jobs::testing
