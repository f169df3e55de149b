#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <stdexcept>
#include <string>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/sha256.hpp"

namespace fs = std::filesystem;
using namespace foldfarm;

namespace {
struct TempDir {
  std::string path = [] {
    std::string tmpl = (fs::temp_directory_path() / "ff_sha256.XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    return tmpl;
  }();
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};
}  // namespace

// Files are hashed whole (several read buffers), as their bytes are; an unreadable file is
// named.
TEST(Sha256, FilesHashAsTheirBytesAndAMissingFileIsNamed) {
  TempDir dir;
  EXPECT_EQ(sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  std::string bytes(3 * (1 << 20) + 17, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>((i * 131) % 251);
  const std::string path = dir.path + "/blob.bin";
  writeFileAtomic(path, bytes);
  EXPECT_EQ(sha256File(path), sha256Hex(bytes));
  try {
    sha256File(dir.path + "/missing.bin");
    ADD_FAILURE() << "hashed a missing file";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("missing.bin: cannot read"), std::string::npos)
        << e.what();
  }
}
