// The text helpers of messages: a path in a suggested command is one shell word, read back by
// the shell byte for byte.
#include <gtest/gtest.h>

#include <string>

#include "core/base/process.hpp"
#include "core/base/text.hpp"
#include "core/base/utf8.hpp"

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

TEST(Utf8, TheFirstInvalidByteIsFound) {
  EXPECT_EQ(invalidUtf8At("/scratch/run 1"), std::string_view::npos);
  EXPECT_EQ(invalidUtf8At("/scratch/\xc3\xa9t\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80"),
            std::string_view::npos);
  EXPECT_EQ(invalidUtf8At("camp\xff"), 4u);
  EXPECT_EQ(invalidUtf8At("ab\xc3"), 2u);            // cut short
  EXPECT_EQ(invalidUtf8At("\xc0\xaf"), 0u);          // overlong '/'
  EXPECT_EQ(invalidUtf8At("x\xed\xa0\x80"), 1u);     // a surrogate
  EXPECT_EQ(invalidUtf8At("\xf4\x90\x80\x80"), 0u);  // beyond U+10FFFF
  EXPECT_EQ(invalidUtf8At("a\x80"), 1u);             // a lone continuation byte
}

TEST(Utf8, InvalidBytesAreWrittenAsEscapes) {
  EXPECT_EQ(escapeInvalidUtf8("/scratch/\xc3\xa9t\xc3\xa9"), "/scratch/\xc3\xa9t\xc3\xa9");
  EXPECT_EQ(escapeInvalidUtf8("camp\xff"), "camp\\xff");
  EXPECT_EQ(escapeInvalidUtf8("\xc0\xaf/a\xc3"), "\\xc0\\xaf/a\\xc3");
  EXPECT_EQ(escapeInvalidUtf8(""), "");
}

// A list a message names: the first N, then how many more (a retry of thousands of tasks
// printed every id).
TEST(Text, AListNamesItsFirstItemsAndCountsTheRest) {
  EXPECT_EQ(listWithMore({}, 3), "");
  EXPECT_EQ(listWithMore({"r0000m0"}, 3), "r0000m0");
  EXPECT_EQ(listWithMore({"a", "b", "c"}, 3), "a, b, c");
  EXPECT_EQ(listWithMore({"a", "b", "c", "d", "e"}, 2), "a, b and 3 more");
  EXPECT_EQ(listWithMore({"a", "b"}, 0), "2 more");
}
