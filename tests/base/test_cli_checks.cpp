// Whole-number options: what CLI11 alone converted silently (a number beyond 64 bits, "-1"
// for an unsigned option, leading zeros as octal) is refused or read as written.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/base/cli_checks.hpp"

namespace foldfarm::cli {
namespace {

struct Values {
  std::uint64_t seed = 7;
  std::int64_t jets = 7;
  int steps = 7;
  std::vector<int> sizes;
  double lr = 0.5;
  bool verbose = false;
};

// An app with the options at two depths, as foldfarm's commands are; returns the error text
// ("" when the arguments were accepted).
std::string parse(std::vector<std::string> args, Values& v) {
  CLI::App app{"t"};
  CLI::App* group = app.add_subcommand("bench");
  CLI::App* cmd = group->add_subcommand("pet");
  cmd->add_option("--seed", v.seed);
  cmd->add_option("--jets", v.jets);
  cmd->add_option("--steps", v.steps)->check(between(1, 1e6));
  cmd->add_option("--sizes", v.sizes);
  cmd->add_option("--lr", v.lr);
  cmd->add_flag("--verbose", v.verbose);
  checkIntegerOptions(app);
  args.insert(args.begin(), {"bench", "pet"});
  std::reverse(args.begin(), args.end());  // CLI11 parses a reversed vector
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return e.what();
  }
  return {};
}

TEST(IntegerOptions, NumbersBeyondTheTypeOrOfTheWrongSignAreRefused) {
  for (const auto& [option, value] :
       std::vector<std::pair<std::string, std::string>>{{"--seed", "-1"},
                                                        {"--seed", "18446744073709551616"},
                                                        {"--seed", "99999999999999999999"},
                                                        {"--jets", "9223372036854775808"},
                                                        {"--jets", "-9223372036854775809"},
                                                        {"--jets", "99999999999999999999"},
                                                        {"--steps", "2147483648"},
                                                        {"--sizes", "99999999999999999999"}}) {
    Values v;
    const std::string err = parse({option, value}, v);
    EXPECT_NE(err.find(option), std::string::npos) << option << " " << value << ": " << err;
    EXPECT_NE(err.find(value), std::string::npos) << option << " " << value << ": " << err;
  }
}

// A positive or non-negative number is finite: "inf" and "1e309" (strtod's infinity) are
// refused (before: --lost-after inf, --poll 1e309 were taken, and a deadline of now + inf
// seconds overflows the clock's integer count).
TEST(NumberOptions, PositiveAndNonNegativeNumbersAreFinite) {
  for (const auto& check : {kPositive, kNonNegative}) {
    for (std::string bad : {"inf", "-inf", "1e309", "nan", "-1", "x"}) {
      EXPECT_FALSE(check(bad).empty()) << bad;
    }
    for (std::string good : {"1", "0.5", "1e300"}) EXPECT_EQ(check(good), "") << good;
  }
  std::string zero = "0";
  EXPECT_FALSE(kPositive(zero).empty());
  EXPECT_EQ(kNonNegative(zero), "");
}

TEST(IntegerOptions, NumbersWithinTheTypeAreReadAsWrittenInDecimal) {
  Values v;
  ASSERT_EQ(parse({"--seed", "18446744073709551615", "--jets", "-9223372036854775808", "--steps",
                   "010", "--sizes", "007", "--sizes", "+3", "--lr", "1e-3", "--verbose"},
                  v),
            "");
  EXPECT_EQ(v.seed, UINT64_MAX);
  EXPECT_EQ(v.jets, INT64_MIN);
  EXPECT_EQ(v.steps, 10) << "leading zeros are decimal, not octal";
  EXPECT_EQ(v.sizes, (std::vector<int>{7, 3}));
  EXPECT_DOUBLE_EQ(v.lr, 1e-3);
  EXPECT_TRUE(v.verbose);
  Values w;
  EXPECT_NE(parse({"--steps", "000"}, w).find("--steps"), std::string::npos)
      << "zero, after the zeros are dropped, is still checked against the range";
  Values z;
  ASSERT_EQ(parse({"--seed", "-0", "--jets", "0x10"}, z), "");
  EXPECT_EQ(z.seed, 0u);
  EXPECT_EQ(z.jets, 16) << "hexadecimal is CLI11's own reading, kept";
}

TEST(IntegerOptions, HelpShowsTheTypesUnchanged) {
  CLI::App app{"t"};
  std::uint64_t seed = 0;
  int steps = 0;
  app.add_option("--seed", seed);
  app.add_option("--steps", steps)->check(between(1, 10));
  checkIntegerOptions(app);
  EXPECT_EQ(app.get_option("--seed")->get_type_name(), "UINT");
  EXPECT_EQ(app.get_option("--steps")->get_type_name(), "INT:[1, 10]");
}

TEST(ClosestName, AMisspellingFindsItsNameAndAnotherWordNone) {
  const std::vector<std::string> commands = {"render", "submit", "status"};
  EXPECT_EQ(closestName("sttaus", commands), "status");  // a swap and a substitution
  EXPECT_EQ(closestName("sumbit", commands), "submit");
  EXPECT_EQ(closestName("stat", commands), "status");  // a beginning
  EXPECT_EQ(closestName("watch", commands), "");
  EXPECT_EQ(closestName("st", commands), "");  // too short to begin one
  EXPECT_EQ(closestName("--jsn", {"--json", "--dir", "--help"}), "--json");
  EXPECT_EQ(closestName("--epochz", {"--epochs", "--events"}), "--epochs");
  EXPECT_EQ(closestName("x", {}), "");
}

}  // namespace
}  // namespace foldfarm::cli
