#include "core/base/fault_point.hpp"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "core/base/error.hpp"

namespace foldfarm {

bool faultPointMatches(std::string_view spec, std::string_view point, std::string_view context) {
  const size_t colon = spec.find(':');
  if (spec.substr(0, colon) != point) return false;
  return colon == std::string_view::npos || spec.substr(colon + 1) == context;
}

void faultPoint(std::string_view point, std::string_view context) {
  const char* spec = std::getenv(kFaultEnv);
  if (spec == nullptr || !faultPointMatches(spec, point, context)) return;
  ::kill(::getpid(), SIGKILL);
  ::_exit(137);  // not reached
}

void faultError(std::string_view point, std::string_view context) {
  const char* spec = std::getenv(kFaultEnv);
  if (spec == nullptr || !faultPointMatches(spec, point, context)) return;
  throw Error(std::string(point) + " (" + std::string(context) + "): failure injected by " +
              kFaultEnv);
}

}  // namespace foldfarm
