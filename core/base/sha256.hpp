#pragma once
// SHA-256 (FIPS 180-4) of byte strings and files: checkpoint payloads, campaign inputs, the
// simulation an aggregation weights. The x86 SHA extensions compute it where the CPU has them.
// Torch-free. Thread-safety: a Sha256 object is used by one thread at a time.
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace foldfarm {

class Sha256 {
 public:
  // The code that computes it: the fastest this CPU has (the SHA extensions where present),
  // or the portable code (benchmarks and tests compare both).
  enum class Code { kFastest, kPortable };
  explicit Sha256(Code code = Code::kFastest);
  void update(const void* data, size_t size);
  void update(std::string_view bytes) { update(bytes.data(), bytes.size()); }
  // Lower-case hex digest; the object must not be updated afterwards.
  std::string hexDigest();

 private:
  void (*compress_)(uint32_t* state, const uint8_t* blocks, size_t count);
  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_ = 0;
};

std::string sha256Hex(std::string_view bytes);
// What Code::kFastest runs here: "sha-ni" (the x86-64 SHA extensions) or "portable".
const char* sha256Implementation();
// Throws InputError("<path>: cannot read: ...") when the file cannot be read. `on_read(n)`,
// when given, is called after each n bytes read (progress of large files).
std::string sha256File(const std::string& path,
                       const std::function<void(size_t)>& on_read = nullptr);

}  // namespace foldfarm
