#pragma once
// Writes a synthetic dataset file in the OmniLearn layout: generated in blocks
// on `threads` threads (each jet depends only on (seed, index), so the file is identical for
// any thread count), appended in order, progress with rate/ETA on stderr, committed
// atomically. Root attributes: kind, tune, seed, generator config, class names, and the
// feature statistics for the layout ("feature_stats": JetClass for pretraining, Z+jets for
// unfolding) as JSON text.
#include <cstdint>
#include <string>

#include "core/base/run_threads.hpp"
#include "core/data/synth.hpp"

namespace foldfarm::data {

enum class SynthKind { kPretrain, kUnfold };

// The generated jet pT range in GeV, and the generator threads, that writeSynthFile accepts.
inline constexpr double kMinSynthPt = 1.0;
inline constexpr double kMaxSynthPt = 1e5;
inline constexpr int kMaxSynthThreads = kMaxThreads;

struct SynthFileOptions {
  SynthKind kind = SynthKind::kPretrain;
  SynthConfig config = SynthConfig::pretrainDefaults();
  int64_t count = 0;  // jets (pretrain) or events (unfold), > 0
  uint64_t seed = 0;
  std::string out;
  int threads = 1;
  int64_t block_rows = 4096;
  int deflate_level = 1;
  bool progress = true;
  // Unfold: the levels written, "both", or "reco" (as experimental data is: detector level
  // only) or "gen" (a truth sample). The events are those of "both" for the same seed.
  std::string levels = "both";
};

// Throws InputError for bad options (count <= 0, P < 1, pT range or threads outside the
// limits above, levels not one of the three or given for pretraining jets, output directory
// missing).
void writeSynthFile(const SynthFileOptions& opt);

}  // namespace foldfarm::data
