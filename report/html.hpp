#pragma once
// Small HTML building blocks for the self-contained report: escaping, tables, and images
// embedded as data: URIs (base64 PNG), so the page needs no other file and no network.
#include <string>
#include <vector>

namespace foldfarm::report {

// Escapes & < > " ' for text and attribute values.
std::string htmlEscape(const std::string& text);

// <table> with a header row; cells are escaped text. `id` and `cls` may be empty.
std::string htmlTable(const std::vector<std::string>& header,
                      const std::vector<std::vector<std::string>>& rows, const std::string& id = "",
                      const std::string& cls = "");

// <figure> with the PNG embedded (data:image/png;base64,…) and an escaped caption.
// Throws Error when `png` does not start with the PNG signature (names `what`).
std::string htmlPngFigure(const std::string& png, const std::string& caption,
                          const std::string& what);

// A section that is omitted because its inputs are absent: the heading and one line.
std::string htmlOmittedSection(const std::string& id, const std::string& title,
                               const std::string& why);

// True when `bytes` start with the 8-byte PNG signature.
bool isPng(const std::string& bytes);

// Fixed-point / general formatting for tables ("-" for NaN).
std::string fmt(double v, int precision = 3);

}  // namespace foldfarm::report
