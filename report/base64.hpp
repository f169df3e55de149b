#pragma once
// Base64 (RFC 4648, with padding): embeds PNG plots in the self-contained HTML report.
#include <string>
#include <string_view>

namespace foldfarm::report {

std::string base64Encode(std::string_view bytes);

}  // namespace foldfarm::report
