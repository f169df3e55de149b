#pragma once
// FNV-1a, 64 bit: a fast, non-cryptographic hash of bytes, for checks that two copies of
// data are the same (ranks' weights and parameters, a training set's fingerprint, a file
// read by a probe task). Pass the previous result as `h` to hash several pieces as one.
// For integrity against tampering use core/base/sha256.hpp instead.
#include <cstddef>
#include <cstdint>

namespace foldfarm {

constexpr std::uint64_t kFnv1aOffset = 1469598103934665603ULL;

inline std::uint64_t fnv1a(const void* data, std::size_t n, std::uint64_t h = kFnv1aOffset) {
  const auto* b = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ULL;
  return h;
}

}  // namespace foldfarm
