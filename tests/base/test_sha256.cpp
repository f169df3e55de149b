#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/process.hpp"
#include "core/base/sha256.hpp"

namespace fs = std::filesystem;
using namespace foldfarm;

// Files are hashed whole (several read buffers), as their bytes are; an unreadable file is
// named.
TEST(Sha256, FilesHashAsTheirBytesAndAMissingFileIsNamed) {
  TempDir dir("sha256");
  EXPECT_EQ(sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  std::string bytes(3 * (1 << 20) + 17, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>((i * 131) % 251);
  const std::string path = dir.path() + "/blob.bin";
  writeFileAtomic(path, bytes);
  size_t seen = 0;
  EXPECT_EQ(sha256File(path, [&](size_t n) { seen += n; }), sha256Hex(bytes));
  EXPECT_EQ(seen, bytes.size()) << "progress counts every byte read";
  try {
    sha256File(dir.path() + "/missing.bin");
    ADD_FAILURE() << "hashed a missing file";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("missing.bin: cannot read"), std::string::npos)
        << e.what();
  }
}

// FIPS 180-4's examples and the one-million-'a' vector; every length from 0 to 300 bytes
// and messages fed in pieces of odd sizes and at odd addresses hash as in one piece, and as
// the portable code hashes them, whichever code this CPU runs fastest (the SHA extensions
// where it has them).
TEST(Sha256, KnownVectorsAndEveryLengthAgreeWithThePortableCode) {
  std::printf("sha256 here: %s\n", sha256Implementation());
  for (const Sha256::Code code : {Sha256::Code::kFastest, Sha256::Code::kPortable}) {
    const auto hex = [code](std::string_view bytes) {
      Sha256 s(code);
      s.update(bytes);
      return s.hexDigest();
    };
    EXPECT_EQ(hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    EXPECT_EQ(hex(std::string(1000000, 'a')),
              "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  }
  std::string bytes(300 + 7, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>((i * 37 + 11) % 256);
  for (size_t n = 0; n <= 300; ++n) {
    const std::string_view msg(bytes.data() + n % 7, n);  // odd addresses too
    Sha256 portable(Sha256::Code::kPortable);
    portable.update(msg);
    const std::string want = portable.hexDigest();
    EXPECT_EQ(sha256Hex(msg), want) << n << " bytes";
    Sha256 pieces;
    for (size_t at = 0, step = 1; at < n; at += step, step = step * 3 % 71 + 1)
      pieces.update(msg.substr(at, std::min(step, n - at)));
    EXPECT_EQ(pieces.hexDigest(), want) << n << " bytes in pieces";
  }
}
