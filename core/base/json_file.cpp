#include "core/base/json_file.hpp"

#include <cctype>

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
                             const std::string& advice) {
  const std::string then = advice.empty() ? "" : "; " + advice;
  bool blank = true;
  for (const char c : text) blank &= std::isspace(static_cast<unsigned char>(c)) != 0;
  if (blank) throw InputError(path + ": empty file, not JSON" + then);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(path + ": not valid JSON (" + jsonErrorReason(e) + ")" + then);
  }
}

nlohmann::json readJsonFile(const std::string& path, const std::string& advice) {
  return parseJsonText(readFile(path), path, advice);
}

}  // namespace foldfarm
