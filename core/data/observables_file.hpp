#pragma once
// `foldfarm data observables`: the six substructure observables of every jet of a file,
// computed from its particles (core/data/observables.hpp) and written as `subs` (N, 6), the
// columns named in the `columns` attribute, with the source file and level beside.
#include <string>

namespace foldfarm::data {

// Reads `in` (a jets-layout file, or one level of an unfolding file: `level` "gen" or "reco";
// "" takes gen where the file has it, else reco) in pieces of 4096 jets, with a progress
// line, and writes `out` atomically (nothing there until the whole file is written).
// InputError naming the file: a level that is not gen or reco, a level given for a
// jets-layout file, `out` over `in`, an output directory that does not exist; the readers'
// errors for bad input.
void writeObservablesFile(const std::string& in, const std::string& out, const std::string& level);

}  // namespace foldfarm::data
