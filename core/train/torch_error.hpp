#pragma once
// LibTorch's errors as one line. c10::Error::what() appends a C++ backtrace of twenty-odd
// frames, which a user's terminal, a task log or a journal reason should not carry.
#include <exception>
#include <string>

namespace foldfarm {

// The message of `e`: for a LibTorch error its first line without the backtrace, else
// what().
std::string exceptionMessage(const std::exception& e);

// Whether `e` is an allocation failure: LibTorch's (host memory or a GPU's), std::bad_alloc,
// or a container asked for more elements than memory can address.
bool isOutOfMemory(const std::exception& e);

}  // namespace foldfarm
