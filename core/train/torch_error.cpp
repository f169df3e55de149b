#include "core/train/torch_error.hpp"

#include <c10/util/Exception.h>

#include <new>
#include <stdexcept>

namespace foldfarm {

std::string exceptionMessage(const std::exception& e) {
  const auto* c10 = dynamic_cast<const c10::Error*>(&e);
  std::string text = c10 != nullptr ? c10->what_without_backtrace() : e.what();
  if (c10 != nullptr) {
    const size_t nl = text.find('\n');
    if (nl != std::string::npos) text.resize(nl);
  }
  return text;
}

bool isOutOfMemory(const std::exception& e) {
  // operator new's failure, and a container asked for more elements than an address space
  // holds (std::vector's length_error): sizes beyond the machine either way.
  if (dynamic_cast<const std::bad_alloc*>(&e) != nullptr) return true;
  if (dynamic_cast<const std::length_error*>(&e) != nullptr &&
      std::string(e.what()).find("max_size") != std::string::npos)
    return true;
  if (dynamic_cast<const c10::Error*>(&e) == nullptr) return false;
  const std::string text = exceptionMessage(e);
  // The host allocator's and the CUDA caching allocator's words (LibTorch 1.13 to 2.x).
  return text.find("can't allocate memory") != std::string::npos ||
         text.find("out of memory") != std::string::npos;
}

}  // namespace foldfarm
