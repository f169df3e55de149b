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
                   TaskKindTraits{true, nullptr, std::nullopt});
  // Sleeps `seconds` without looking at stop requests: a task stuck where it cannot stop
  // (the worker's watchdog ends such a worker).
  registerTaskKind(
      "ignores_stop", TaskRunner([](const nlohmann::json& p, const std::string&) {
        std::this_thread::sleep_for(std::chrono::duration<double>(p.value("seconds", 0.0)));
        return TaskOutcome{0, "", nlohmann::json{{"slept", true}}};
      }),
      TaskKindTraits{true, nullptr, std::nullopt});
}

}  // namespace foldfarm::jobs::testing
