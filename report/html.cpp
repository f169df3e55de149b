#include "report/html.hpp"

#include <cmath>
#include <cstdio>

#include "core/base/error.hpp"
#include "report/base64.hpp"

namespace foldfarm::report {

std::string htmlEscape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string htmlTable(const std::vector<std::string>& header,
                      const std::vector<std::vector<std::string>>& rows, const std::string& id,
                      const std::string& cls) {
  std::string s = "<table";
  if (!id.empty()) s += " id=\"" + htmlEscape(id) + "\"";
  if (!cls.empty()) s += " class=\"" + htmlEscape(cls) + "\"";
  s += ">\n<thead><tr>";
  for (const auto& h : header) s += "<th>" + htmlEscape(h) + "</th>";
  s += "</tr></thead>\n<tbody>\n";
  for (const auto& row : rows) {
    s += "<tr>";
    for (const auto& c : row) s += "<td>" + htmlEscape(c) + "</td>";
    s += "</tr>\n";
  }
  return s + "</tbody></table>\n";
}

bool isPng(const std::string& bytes) {
  static const char kSig[] = "\x89PNG\r\n\x1a\n";
  return bytes.size() > 8 && bytes.compare(0, 8, kSig, 8) == 0;
}

std::string htmlPngFigure(const std::string& png, const std::string& caption,
                          const std::string& what) {
  if (!isPng(png)) throw InputError(what + ": not a PNG image; regenerate it");
  return "<figure><img alt=\"" + htmlEscape(caption) + "\" src=\"data:image/png;base64," +
         base64Encode(png) + "\"><figcaption>" + htmlEscape(caption) + "</figcaption></figure>\n";
}

std::string htmlOmittedSection(const std::string& id, const std::string& title,
                               const std::string& why) {
  return "<section id=\"" + htmlEscape(id) + "\" class=\"omitted\"><h2>" + htmlEscape(title) +
         "</h2>\n<p class=\"note\">Omitted: " + htmlEscape(why) + "</p></section>\n";
}

std::string fmt(double v, int precision) {
  if (std::isnan(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", precision, v);
  return buf;
}

}  // namespace foldfarm::report
