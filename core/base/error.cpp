#include "core/base/error.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace foldfarm {

std::string hostName() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown-host";
  std::string h(buf);
  auto dot = h.find('.');
  return dot == std::string::npos ? h : h.substr(0, dot);
}

std::string errnoMessage(int err) {
  return std::strerror(err);
}

void throwSystemError(const char* call, const char* file, int line, const std::string& context) {
  int err = errno;
  throw Error(std::string(call) + " failed at " + file + ":" + std::to_string(line) + ": " +
              errnoMessage(err) + (context.empty() ? "" : " (" + context + ")"));
}

}  // namespace foldfarm
