#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
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
// the portable code hashes them (run in a child with FF_SHA256_PORTABLE=1), whichever code
// this CPU runs (the SHA extensions where it has them).
TEST(Sha256, KnownVectorsAndEveryLengthAgreeWithThePortableCode) {
  EXPECT_EQ(sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  std::string bytes(300 + 7, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>((i * 37 + 11) % 256);
  std::string all;
  for (size_t n = 0; n <= 300; ++n) {
    const std::string_view msg(bytes.data() + n % 7, n);  // odd addresses too
    const std::string whole = sha256Hex(msg);
    Sha256 pieces;
    for (size_t at = 0, step = 1; at < n; at += step, step = step * 3 % 71 + 1)
      pieces.update(msg.substr(at, std::min(step, n - at)));
    EXPECT_EQ(pieces.hexDigest(), whole) << n << " bytes in pieces";
    all += whole + "\n";
  }
  const char* self = std::getenv("FF_SHA256_DIGESTS");
  if (self) {  // the child: print the digests
    std::printf("implementation: %s\n%s", sha256Implementation(), all.c_str());
    return;
  }
  std::printf("sha256 here: %s\n", sha256Implementation());
  ProcessOptions po;
  po.extraEnv = {"FF_SHA256_PORTABLE=1", "FF_SHA256_DIGESTS=1"};
  const ProcessResult child =
      runProcess({fs::read_symlink("/proc/self/exe").string(),
                  "--gtest_filter=Sha256.KnownVectorsAndEveryLengthAgreeWithThePortableCode"},
                 po);
  ASSERT_TRUE(child.ok()) << child.err;
  EXPECT_NE(child.out.find("implementation: portable\n"), std::string::npos) << child.out;
  EXPECT_NE(child.out.find(all), std::string::npos) << "the portable code hashes otherwise";
}
