#pragma once
// UTF-8 validation: paths and text that JSON records must be UTF-8.
#include <cstddef>
#include <string>
#include <string_view>

namespace foldfarm {

// The offset of the first byte of `s` that is not part of valid UTF-8 (an overlong form, a
// surrogate and a code point beyond U+10FFFF are invalid too); npos when all of it is valid.
// Paths that JSON records must be UTF-8: a name of other bytes cannot be written there.
inline size_t invalidUtf8At(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    size_t len = 0;
    unsigned cp = 0;
    if (b < 0x80) {
      ++i;
      continue;
    } else if (b >= 0xC2 && b <= 0xDF) {
      len = 2, cp = b & 0x1Fu;
    } else if (b >= 0xE0 && b <= 0xEF) {
      len = 3, cp = b & 0x0Fu;
    } else if (b >= 0xF0 && b <= 0xF4) {
      len = 4, cp = b & 0x07u;
    } else {
      return i;
    }
    if (i + len > s.size()) return i;
    for (size_t k = 1; k < len; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xC0u) != 0x80u) return i;
      cp = (cp << 6) | (c & 0x3Fu);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
      return i;
    i += len;
  }
  return std::string_view::npos;
}

// `s` with each byte that is not part of valid UTF-8 written as \xNN: printable in a message.
inline std::string escapeInvalidUtf8(std::string_view s) {
  static const char* const kHex = "0123456789abcdef";
  std::string out;
  while (!s.empty()) {
    const size_t at = invalidUtf8At(s);
    if (at == std::string_view::npos) {
      out += s;
      break;
    }
    out += s.substr(0, at);
    const auto b = static_cast<unsigned char>(s[at]);
    out += "\\x";
    out += kHex[b >> 4];
    out += kHex[b & 0xFu];
    s.remove_prefix(at + 1);
  }
  return out;
}

}  // namespace foldfarm
