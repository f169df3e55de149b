#pragma once
// What the tests of `foldfarm pretrain --stream` under a launcher share (test_pretrain_stream,
// test_pretrain_srun): a file of synthetic jets, and the command line (a tiny model, 3 epochs,
// blocks of 64 rows, a buffer of 300 jets, one thread). FOLDFARM_BINARY is the executable.
#include <string>
#include <vector>

#include "core/base/process.hpp"
#include "tests/support/run_child.hpp"

namespace foldfarm::testing {

// `jets` synthetic pretraining jets of 24 particle slots (seed `seed`) written to `path`.
inline ProcessResult synthStreamJets(const std::string& path, int jets, int seed = 1) {
  return runSingleThreaded(
      {FOLDFARM_BINARY, "data", "synth", "--kind", "pretrain", "--jets", std::to_string(jets),
       "--seed", std::to_string(seed), "--particles", "24", "--out", path},
      120);
}

// `foldfarm pretrain --stream` of `data` (a file or a glob) into `out`; the collective timeout
// last, so that a test can change it.
inline std::vector<std::string> streamPretrainArgs(const std::string& data, const std::string& out,
                                                   const std::string& collective_timeout = "60") {
  return {FOLDFARM_BINARY,
          "pretrain",
          "--data",
          data,
          "--out",
          out,
          "--stream",
          "--preset",
          "tiny",
          "--epochs",
          "3",
          "--batch",
          "16",
          "--seed",
          "4",
          "--threads",
          "1",
          "--block-rows",
          "64",
          "--shuffle-buffer",
          "300",
          "--read-ahead",
          "3",
          "--collective-timeout",
          collective_timeout};
}

}  // namespace foldfarm::testing
