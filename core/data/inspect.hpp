#pragma once
// Summary of an OmniLearn HDF5 file for `foldfarm data inspect`: datasets and shapes, root
// attributes, label balance, and per level the real-particle multiplicity, jet-feature and
// particle-feature statistics (mean, std, min, max), pass fractions and observable means for
// unfolding files; per level the checks of the particle features against OmniLearn's
// definitions ("checks": failing jets and the first row) and "warnings", one line each.
// Reads the file in blocks (never whole), so every value is validated (NaN/Inf -> InputError).
#include <string>

#include <nlohmann/json.hpp>

namespace foldfarm::data {

nlohmann::json summarizeFile(const std::string& path);
// Human-readable table of the same summary.
std::string formatSummary(const nlohmann::json& summary);

}  // namespace foldfarm::data
