#include "core/data/synth_file.hpp"

#include <algorithm>
#include <thread>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/progress.hpp"
#include "core/data/features.hpp"
#include "core/data/jet_writer.hpp"

namespace foldfarm::data {

void writeSynthFile(const SynthFileOptions& opt) {
  if (opt.count <= 0) throw InputError("synth: the number of jets/events must be positive");
  if (opt.config.P < 1) throw InputError("synth: particles per jet must be >= 1");
  if (!(opt.config.pt_max >= opt.config.pt_min) || !(opt.config.pt_min > 0))
    throw InputError("synth: need 0 < pt-min <= pt-max");
  requireOutputDirectory(opt.out);
  const int threads = std::max(1, opt.threads);
  const bool pretrain = opt.kind == SynthKind::kPretrain;

  nlohmann::json attrs = {
      {"kind", pretrain ? "pretrain" : "unfold"},
      {"tune", tuneName(opt.config.tune)},
      {"seed", opt.seed},
      {"generator", opt.config.toJson().dump()},
      {"feature_stats",
       (pretrain ? FeatureStats::jetClass() : FeatureStats::zJets()).toJson().dump()},
      {"producer", std::string("foldfarm ") + FOLDFARM_VERSION},
  };
  if (pretrain) {
    nlohmann::json names = nlohmann::json::array();
    for (int c = 0; c < kNumSynthClasses; ++c) names.push_back(jetClassName(c));
    attrs["class_names"] = names.dump();
  }
  WriteOptions wopt;
  wopt.deflate_level = opt.deflate_level;
  JetFileWriter writer(opt.out, pretrain ? FileLayout::kJets : FileLayout::kUnfold, opt.config.P,
                       pretrain, attrs, wopt);
  Progress progress(pretrain ? "synth pretrain" : "synth unfold", opt.count,
                    pretrain ? "jets" : "events");
  progress.setSilent(!opt.progress);
  const int64_t block = std::max<int64_t>(1, opt.block_rows);
  for (int64_t begin = 0; begin < opt.count; begin += block * threads) {
    const int64_t end = std::min(opt.count, begin + block * threads);
    const int64_t per = (end - begin + threads - 1) / threads;
    if (pretrain) {
      std::vector<JetArrays> parts(static_cast<size_t>(threads));
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; ++t) {
        const int64_t b = std::min(end, begin + t * per), e = std::min(end, b + per);
        pool.emplace_back([&, t, b, e] { parts[t] = synthPretrain(opt.config, opt.seed, b, e); });
      }
      for (auto& th : pool) th.join();
      for (auto& p : parts)
        if (p.n > 0) writer.append(p);
    } else {
      std::vector<UnfoldArrays> parts(static_cast<size_t>(threads));
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; ++t) {
        const int64_t b = std::min(end, begin + t * per), e = std::min(end, b + per);
        pool.emplace_back([&, t, b, e] { parts[t] = synthUnfold(opt.config, opt.seed, b, e); });
      }
      for (auto& th : pool) th.join();
      for (auto& p : parts)
        if (p.n() > 0) writer.append(p);
    }
    progress.update(end);
  }
  writer.commit();
  progress.finish();
}

}  // namespace foldfarm::data
