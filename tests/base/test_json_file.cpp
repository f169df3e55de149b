// readJsonFile / parseJsonText: a damaged JSON file is one line naming the file, the line and
// column and what the parser expected, and what to do; never nlohmann's
// "[json.exception.parse_error.101]" prefix.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/json_file.hpp"

using foldfarm::InputError;
using nlohmann::json;

namespace {

std::string refusal(const std::string& text) {
  try {
    foldfarm::parseJsonText(text, "D/spec.json", "restore it");
  } catch (const InputError& e) {
    return e.what();
  }
  return "accepted";
}

}  // namespace

TEST(JsonFile, ValidTextParses) {
  EXPECT_EQ(foldfarm::parseJsonText(" {\"a\": [1, 2]}\n", "f", ""), json({{"a", {1, 2}}}));
}

TEST(JsonFile, DamagedTextNamesTheFileThePlaceAndTheAdvice) {
  EXPECT_EQ(refusal("{\"name\": \"x\",\n \"replicas\": 2"),
            "D/spec.json: not valid JSON (line 2, column 15: syntax error while parsing object - "
            "unexpected end of input; expected '}'); restore it");
  EXPECT_EQ(refusal("{,}"),
            "D/spec.json: not valid JSON (line 1, column 2: syntax error while parsing object "
            "key - unexpected ','; expected string literal); restore it");
  EXPECT_EQ(refusal(""), "D/spec.json: empty file, not JSON; restore it");
  EXPECT_EQ(refusal(" \n\t"), "D/spec.json: empty file, not JSON; restore it");
  // Not a parse error: a number beyond double's range, named by its key where it has one.
  EXPECT_EQ(refusal("[1e400]"),
            "D/spec.json: '1e400' is beyond the range of a double (about 1.8e308); fix the value");
  EXPECT_EQ(refusal("{\"chain\": {\"config\": {\"lr\": [1, -1e999]}}}"),
            "D/spec.json: 'chain.config.lr[]' = '-1e999' is beyond the range of a double (about "
            "1.8e308); fix the value");
  try {
    foldfarm::parseJsonText("[", "f.json", "");
    FAIL() << "accepted";
  } catch (const InputError& e) {
    const std::string why = e.what();
    EXPECT_EQ(why.find("json.exception"), std::string::npos) << why;
    EXPECT_EQ(why.back(), ')') << why;  // no advice given: none appended
  }
}

// A key given twice in one object: the parser would keep the last without a word (a config's
// "lr" set twice is a silent choice between two learning rates). The same key in two objects,
// or in objects of an array, is not twice.
TEST(JsonFile, AKeyGivenTwiceInOneObjectIsRefusedByItsPath) {
  EXPECT_EQ(refusal("{\"epochs\": 2, \"lr\": 1e-3, \"lr\": 1e-4}"),
            "D/spec.json: 'lr' is given twice in one object (JSON keeps only the last); keep one");
  EXPECT_EQ(refusal("{\"binning\": {\"mass\": {\"lo\": 0, \"hi\": 9}, \"width\": {}, "
                    "\"mass\": {}}}"),
            "D/spec.json: 'binning.mass' is given twice in one object (JSON keeps only the last); "
            "keep one");
  EXPECT_EQ(refusal("{\"v\": [{\"a\": 1}, {\"b\": 1, \"b\": 2}]}"),
            "D/spec.json: 'v[].b' is given twice in one object (JSON keeps only the last); keep "
            "one");
  const json fine = foldfarm::parseJsonText(
      "{\"a\": {\"lo\": 0}, \"b\": {\"lo\": 1}, \"c\": [{\"lo\": 2}, {\"lo\": 3}], \"lo\": 4}", "f",
      "");
  EXPECT_EQ(fine["c"][1]["lo"], 3);
  EXPECT_EQ(fine["lo"], 4);
  // What this program wrote (nlohmann's dump writes no key twice) is parsed without following
  // the keys; its damage is said alike.
  EXPECT_EQ(foldfarm::parseJsonText("{\"a\": 1}", "f", "", foldfarm::JsonWriter::kProgram),
            json({{"a", 1}}));
  try {
    foldfarm::parseJsonText("{\"a\": ", "D/result.json", "rerun", foldfarm::JsonWriter::kProgram);
    FAIL() << "accepted";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("D/result.json: not valid JSON (line 1, column 7: ", 0),
              0u)
        << e.what();
  }
}

TEST(JsonFile, ReadJsonFileReadsTheFile) {
  const std::string dir =
      std::filesystem::temp_directory_path() / ("ff-json-file-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/meta.json";
  foldfarm::writeFileAtomic(path, "{\"format\": 1}");
  EXPECT_EQ(foldfarm::readJsonFile(path, ""), json({{"format", 1}}));
  foldfarm::writeFileAtomic(path, "{\"format\": ");
  try {
    foldfarm::readJsonFile(path, "retrain");
    FAIL() << "accepted";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()).rfind(path + ": not valid JSON (line 1, column 12: ", 0), 0u)
        << e.what();
  }
  EXPECT_THROW(foldfarm::readJsonFile(dir + "/missing.json", ""), InputError);
  std::filesystem::remove_all(dir);
}
