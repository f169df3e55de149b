#pragma once
// JSON files a person wrote or a crash may have cut short, parsed with one wording for every
// reader: "PATH: not valid JSON (line 3, column 5: syntax error while parsing object -
// unexpected end of input; expected '}'); ADVICE", "PATH: empty file; ADVICE" — the parser's
// reason without its "[json.exception.parse_error.101] parse error at" prefix.
//
// Thread-safety: pure functions (readJsonFile reads a file).
#include <string>

#include <nlohmann/json.hpp>

namespace foldfarm {

// The parser's reason for refusing a text, without the library's prefix.
std::string jsonErrorReason(const nlohmann::json::exception& e);

// `text` (read from `path`) parsed; InputError as above otherwise. `advice` (may be empty)
// says what to do. Also refused, naming the key by its dotted path: a key given twice in one
// object ("PATH: 'chain.config.lr' is given twice in one object (JSON keeps only the last);
// keep one") and a number beyond double's range ("PATH: 'time_limit_s' = 1e400 is beyond the
// range of a double (about 1.8e308); fix the value").
// Who wrote the text: a person (configs, specs, --binning: the key checks above) or this
// program (records, histories, results written by nlohmann's dump, which writes no key twice:
// parsed without following the keys, about a third faster, for readers of one file per task).
enum class JsonWriter { kPerson, kProgram };
nlohmann::json parseJsonText(const std::string& text, const std::string& path,
                             const std::string& advice, JsonWriter writer = JsonWriter::kPerson);
// readFile(path) parsed as parseJsonText.
nlohmann::json readJsonFile(const std::string& path, const std::string& advice,
                            JsonWriter writer = JsonWriter::kPerson);

}  // namespace foldfarm
