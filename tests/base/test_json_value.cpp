// jsonValue: a config's value as the type the code uses, or an InputError naming the key;
// never nlohmann's silent truncation (2.5 -> 2) or wrap-around (4294967297 -> 1).
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/error.hpp"
#include "core/base/json_value.hpp"

using foldfarm::InputError;
using foldfarm::jsonValue;
using nlohmann::json;

namespace {

template <class T>
std::string refusal(const json& v) {
  try {
    jsonValue<T>(v, "cfg.json: 'key'");
  } catch (const InputError& e) {
    return e.what();
  }
  return "accepted";
}

}  // namespace

TEST(JsonValue, ValuesOfTheRightTypeAndRangePass) {
  EXPECT_EQ(jsonValue<int>(json(-7), "k"), -7);
  EXPECT_EQ(jsonValue<int>(json(2147483647), "k"), 2147483647);
  EXPECT_EQ(jsonValue<int64_t>(json(4294967297LL), "k"), 4294967297LL);
  EXPECT_EQ(jsonValue<uint64_t>(json(18446744073709551615ULL), "k"), 18446744073709551615ULL);
  EXPECT_EQ(jsonValue<double>(json(3), "k"), 3.0);
  EXPECT_EQ(jsonValue<float>(json(0.5), "k"), 0.5f);
  EXPECT_TRUE(jsonValue<bool>(json(true), "k"));
  EXPECT_EQ(jsonValue<std::string>(json("lion"), "k"), "lion");
  EXPECT_EQ(jsonValue<std::vector<int64_t>>(json::array({64, 32}), "k"),
            (std::vector<int64_t>{64, 32}));
}

TEST(JsonValue, TruncationWrapAroundAndWrongTypesAreRefusedNamingTheKey) {
  EXPECT_EQ(refusal<int>(json(2.5)), "cfg.json: 'key' must be an integer, got 2.5");
  EXPECT_EQ(refusal<int>(json(64.0)), "cfg.json: 'key' must be an integer, got 64.0");
  EXPECT_EQ(refusal<int>(json(4294967360LL)),
            "cfg.json: 'key' = 4294967360 is beyond the 32-bit integer range (-2147483648 to "
            "2147483647)");
  EXPECT_NE(refusal<int>(json(-2147483649LL)).find("beyond the 32-bit"), std::string::npos);
  EXPECT_NE(refusal<uint64_t>(json(-1)).find("beyond the unsigned 64-bit"), std::string::npos);
  EXPECT_NE(refusal<int64_t>(json(18446744073709551615ULL)).find("beyond the 64-bit"),
            std::string::npos);
  EXPECT_EQ(refusal<int>(json("8")), "cfg.json: 'key' must be an integer, got \"8\"");
  EXPECT_EQ(refusal<bool>(json(1)), "cfg.json: 'key' must be true or false, got 1");
  EXPECT_EQ(refusal<double>(json(nullptr)), "cfg.json: 'key' must be a number, got null");
  EXPECT_EQ(refusal<float>(json(1e300)), "cfg.json: 'key' = 1e+300 is not a finite number");
  EXPECT_EQ(refusal<std::string>(json(3)), "cfg.json: 'key' must be a string, got 3");
  EXPECT_EQ(refusal<std::vector<int64_t>>(json::array({64, 1.5})),
            "cfg.json: 'key'[1] must be an integer, got 1.5");
  EXPECT_EQ(refusal<std::vector<int64_t>>(json(64)), "cfg.json: 'key' must be an array, got 64");
}
