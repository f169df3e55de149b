#include "core/base/json_file.hpp"

#include <cctype>
#include <set>
#include <vector>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"

namespace foldfarm {

std::string jsonErrorReason(const nlohmann::json::exception& e) {
  std::string what = e.what();
  for (const char* prefix : {"parse error at ", "] "}) {
    const auto at = what.find(prefix);
    if (at != std::string::npos) return what.substr(at + std::char_traits<char>::length(prefix));
  }
  return what;
}

nlohmann::json parseJsonText(const std::string& text, const std::string& path,
                             const std::string& advice, JsonWriter writer) {
  using json = nlohmann::json;
  const std::string then = advice.empty() ? "" : "; " + advice;
  bool blank = true;
  for (const char c : text) blank &= std::isspace(static_cast<unsigned char>(c)) != 0;
  if (blank) throw InputError(path + ": empty file, not JSON" + then);
  // The parser keeps the last of a key given twice in one object without a word ("lr": 1e-3,
  // ..., "lr": 1e-4), and refuses a number beyond double's range (1e400) naming the token but
  // not the key: follow the keys to refuse the one and to name the other.
  std::vector<std::string> keys;            // per open object ("" before its first key) or array
  std::vector<std::set<std::string>> seen;  // the keys of each open object (unused for arrays)
  const auto dotted = [&keys] {
    std::string key;
    for (const auto& k : keys) {
      if (k != "[]")
        key += (key.empty() ? "" : ".") + k;
      else if (!key.empty())
        key += "[]";
    }
    return key;
  };
  const auto follow = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) {
      keys.emplace_back(event == json::parse_event_t::array_start ? "[]" : "");
      seen.emplace_back();
    } else if (event == json::parse_event_t::object_end ||
               event == json::parse_event_t::array_end) {
      if (!keys.empty()) keys.pop_back();
      if (!seen.empty()) seen.pop_back();
    } else if (event == json::parse_event_t::key && !keys.empty()) {
      keys.back() = parsed.get<std::string>();
      if (!seen.back().insert(keys.back()).second)
        throw InputError(path + ": '" + dotted() +
                         "' is given twice in one object (JSON keeps only the last); keep one");
    }
    return true;
  };
  try {
    if (writer == JsonWriter::kProgram) return json::parse(text);
    return json::parse(text, follow);
  } catch (const json::out_of_range& e) {
    const std::string key = dotted();
    const std::string what = e.what();
    const auto token = what.find("parsing '");
    throw InputError(path + ": " + (key.empty() ? "" : "'" + key + "' = ") +
                     (token == std::string::npos ? "a number" : what.substr(token + 8)) +
                     " is beyond the range of a double (about 1.8e308); fix the value");
  } catch (const json::exception& e) {
    throw InputError(path + ": not valid JSON (" + jsonErrorReason(e) + ")" + then);
  }
}

nlohmann::json readJsonFile(const std::string& path, const std::string& advice, JsonWriter writer) {
  return parseJsonText(readFile(path), path, advice, writer);
}

}  // namespace foldfarm
