#pragma once
// `foldfarm generate`: jets of one class sampled from a pretrained PET's generator head
// (core/model/diffusion.hpp), on a device.
//   1. each jet's kinematics (pT, eta, mass, multiplicity; standardised) are drawn from the
//      class's Gaussian conditioning that pretraining stored in the checkpoint, the
//      multiplicity rounded and clamped to [1, P];
//   2. the particles are sampled by the diffusion sampler in `steps` steps, batch by batch,
//      the model (its EMA weights) on `device`;
//   3. features are de-standardised with the checkpoint's statistics.
// Deterministic for a seed on a given device (the sampler's start noise is drawn on the
// host). Throws InputError, before reading anything, for fewer than 1 jet, step or batch
// row, and naming the checkpoint when it has no generator head, no conditioning for the
// class, or the class is out of range.
#include <cstdint>
#include <string>

#include "core/data/jet_arrays.hpp"

namespace foldfarm {

struct GenerateOptions {
  std::string checkpoint;  // pretraining output directory or its model/
  int64_t class_index = 0;
  int64_t jets = 100, steps = 64, batch = 256;
  uint64_t seed = 1;
  std::string device = "auto";  // cpu, cuda or auto (core/train/device.hpp)
};

data::JetArrays generateJets(const GenerateOptions& o);

// `foldfarm generate`: checks that `out` can be written (its directory exists, before the
// checkpoint is read), generates, and writes the jets atomically to `out` (jets layout, the
// options as attributes).
void generateJetFile(const GenerateOptions& o, const std::string& out);

}  // namespace foldfarm
