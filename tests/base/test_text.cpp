// The text helpers of messages: a path in a suggested command is one shell word, read back by
// the shell byte for byte.
#include <gtest/gtest.h>

#include <string>

#include "core/base/process.hpp"
#include "core/base/text.hpp"

using namespace foldfarm;

TEST(ShellWord, APlainPathStaysAsItIs) {
  EXPECT_EQ(shellWord("/scratch/run-1/camp_2.v3"), "/scratch/run-1/camp_2.v3");
  EXPECT_EQ(shellWord("a=b:c,d@e%f+g"), "a=b:c,d@e%f+g");
}

TEST(ShellWord, AnythingAShellReadsSpeciallyIsQuoted) {
  EXPECT_EQ(shellWord(""), "''");
  EXPECT_EQ(shellWord("/scratch/my run"), "'/scratch/my run'");
  EXPECT_EQ(shellWord("it's"), "'it'\\''s'");
  EXPECT_EQ(shellWord("~/camp"), "'~/camp'");
  EXPECT_EQ(shellQuote("plain"), "'plain'");
}

TEST(ShellWord, TheShellReadsItBackByteForByte) {
  for (const std::string s : {"/a b/c", "it's", "$(touch x) `y` \"z\" \\ ; & | * ? [a] {b,c} ~ # !",
                              "tab\there", "", "new\nline", "/plain/path"}) {
    const ProcessResult r = runProcess({"/bin/sh", "-c", "printf %s " + shellWord(s)});
    ASSERT_TRUE(r.ok()) << r.describeFailure();
    EXPECT_EQ(r.out, s);
  }
}
