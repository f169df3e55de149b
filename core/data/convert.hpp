#pragma once
// `foldfarm data convert`: jets files in foldfarm's layout.
//  - convertFromFourVectors: `data` and `jet` recomputed from part_px/py/pz/energy (N,P),
//    in double precision (the jet mass without the cancellation of E^2 - p^2); `pid` kept
//    (one-hot turned into indices); the four-vectors copied along.
//  - repackJets: a jets-layout file (data/jet[/pid][/weights], any chunking or filters, or
//    none) rewritten block by block with `options` — by default chunks of 128 whole jets,
//    shuffle + deflate 1: the layout whose chunks `pretrain --stream` decodes in parallel
//    reader threads (core/data/jet_reader.cpp). Values are copied unchanged.
// Both write atomically (nothing at `out` until the whole file is written) and refuse bad
// input with InputError naming the file, as the readers do.
#include <string>

#include "core/data/jet_writer.hpp"

namespace foldfarm::data {

void convertFromFourVectors(const std::string& in, const std::string& out,
                            const WriteOptions& options = {});
void repackJets(const std::string& in, const std::string& out, const WriteOptions& options = {});

}  // namespace foldfarm::data
