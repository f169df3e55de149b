#include "core/data/synth_file.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/progress.hpp"
#include "core/base/run_threads.hpp"
#include "core/data/features.hpp"
#include "core/data/jet_writer.hpp"

namespace foldfarm::data {

void writeSynthFile(const SynthFileOptions& opt) {
  if (opt.count <= 0) throw InputError("synth: the number of jets/events must be positive");
  if (opt.config.P < 1) throw InputError("synth: particles per jet must be >= 1");
  // Below the shower's cut-off (about 1 GeV) a jet is not a jet, and a pT of 1e-100 drove the
  // generator into an allocation without bound; above 100 TeV no collider makes one.
  if (!(opt.config.pt_max >= opt.config.pt_min) || !(opt.config.pt_min >= kMinSynthPt) ||
      !(opt.config.pt_max <= kMaxSynthPt))
    throw InputError(
        fmt::format("synth: need {:g} <= --pt-min <= --pt-max <= {:g} GeV (got --pt-min "
                    "{:g}, --pt-max {:g})",
                    kMinSynthPt, kMaxSynthPt, opt.config.pt_min, opt.config.pt_max));
  if (opt.threads < 0)
    throw InputError("synth: --threads " + std::to_string(opt.threads) +
                     " is negative; give a count of threads, at most the cores of the node");
  if (opt.threads > kMaxSynthThreads)
    throw InputError("synth: --threads " + std::to_string(opt.threads) + " exceeds " +
                     std::to_string(kMaxSynthThreads) + "; give at most the cores of the node");
  const bool pretrain = opt.kind == SynthKind::kPretrain;
  // Events are selected by their jet pT: a spectrum below the cut writes a file in which
  // nothing passes, which every unfolding then refuses.
  if (!pretrain && opt.config.pt_max < opt.config.pass_pt_min)
    throw InputError(fmt::format(
        "synth: --pt-max {:g} GeV lies below the unfolding samples' selection (jet pT >= {:g} "
        "GeV at gen and reco level): no event would pass it; give a --pt-max above {:g}",
        opt.config.pt_max, opt.config.pass_pt_min, opt.config.pass_pt_min));
  if (opt.levels != "both" && opt.levels != "reco" && opt.levels != "gen")
    throw InputError("synth: levels must be both, reco or gen (got '" + opt.levels + "')");
  if (pretrain && opt.levels != "both")
    throw InputError("synth: levels apply to unfolding samples (--kind unfold)");
  requireOutputDirectory(opt.out);
  const int threads = std::max(1, opt.threads);

  nlohmann::json attrs = {
      {"kind", pretrain ? "pretrain" : "unfold"},
      {"tune", tuneName(opt.config.tune)},
      {"seed", opt.seed},
      {"generator", opt.config.toJson().dump()},
      {"feature_stats",
       (pretrain ? FeatureStats::jetClass() : FeatureStats::zJets()).toJson().dump()},
      {"producer", std::string("foldfarm ") + FOLDFARM_VERSION},
  };
  if (!pretrain) attrs["levels"] = opt.levels;
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
  int64_t full_gen = 0, full_reco = 0, pass_reco = 0, pass_gen = 0;
  for (int64_t begin = 0; begin < opt.count; begin += block * threads) {
    const int64_t end = std::min(opt.count, begin + block * threads);
    const int64_t per = (end - begin + threads - 1) / threads;
    // Rows [b, e) of this block for generator thread t.
    auto rows = [&](int t) {
      const int64_t b = std::min(end, begin + t * per);
      return std::make_pair(b, std::min(end, b + per));
    };
    if (pretrain) {
      std::vector<JetArrays> parts(static_cast<size_t>(threads));
      runThreads(threads, [&](int t) {
        const auto [b, e] = rows(t);
        parts[static_cast<size_t>(t)] = synthPretrain(opt.config, opt.seed, b, e);
      });
      for (auto& p : parts) {
        if (p.n == 0) continue;
        for (int64_t i = 0; i < p.n; ++i)
          if (p.particle(i, p.P - 1)[2] != 0.0f) ++full_gen;  // real: raw feature 2
        writer.append(p);
      }
    } else {
      std::vector<UnfoldArrays> parts(static_cast<size_t>(threads));
      runThreads(threads, [&](int t) {
        const auto [b, e] = rows(t);
        UnfoldArrays& u = parts[static_cast<size_t>(t)] = synthUnfold(opt.config, opt.seed, b, e);
        if (opt.levels == "reco") {
          u.gen = JetArrays{};
          u.gen_subs.clear();
          u.pass_gen.clear();
        } else if (opt.levels == "gen") {
          u.reco = JetArrays{};
          u.reco_subs.clear();
          u.pass_reco.clear();
        }
      });
      for (auto& p : parts) {
        if (p.n() == 0) continue;
        for (uint8_t f : p.pass_reco) pass_reco += f != 0;
        for (uint8_t f : p.pass_gen) pass_gen += f != 0;
        // Jets whose particles fill every slot: cut to their P hardest (or exactly P).
        for (const auto& [arrays, count] : {std::pair{&p.gen, &full_gen}, {&p.reco, &full_reco}})
          for (int64_t i = 0; i < arrays->n && arrays->P > 0; ++i)
            if (arrays->particle(i, arrays->P - 1)[2] != 0.0f) ++*count;  // real: raw feature 2
        writer.append(p);
      }
    }
    progress.update(end);
  }
  // A steep spectrum can put every event below the selection's cut though --pt-max is above it:
  // such a file every unfolding refuses (not written: the writer's temporary is removed).
  if (!pretrain &&
      ((opt.levels != "gen" && pass_reco == 0) || (opt.levels != "reco" && pass_gen == 0)))
    throw InputError(fmt::format(
        "synth: no event of the {} passes the unfolding samples' selection at {} level (jet pT >= "
        "{:g} GeV; --pt-min {:g}, --pt-max {:g}): raise --pt-min or give more --events",
        opt.count, opt.levels != "gen" && pass_reco == 0 ? "reco" : "gen", opt.config.pass_pt_min,
        opt.config.pt_min, opt.config.pt_max));
  writer.commit();
  progress.finish();
  // Said, not silent: the observables (multiplicity, mass, ...) and the classifiers see the cut
  // jets, and files of other slot counts differ in that alone (before: not a word).
  if (pretrain && full_gen > 0)
    logWarn(
        "synth: {}: {} of {} jets fill all {} particle slots (--particles): they are cut to their "
        "{} hardest particles; a larger --particles keeps more of them whole",
        opt.out, full_gen, opt.count, opt.config.P, opt.config.P);
  else if (full_gen + full_reco > 0)
    logWarn(
        "synth: {}: {} of {} events' gen jets and {} of their reco jets fill all {} particle slots "
        "(--particles): they are cut to their {} hardest particles, and their observables "
        "(multiplicity, mass, ...) are those of the cut jets; a larger --particles keeps more "
        "of them whole; write an unfolding's MC and data with the same --particles",
        opt.out, full_gen, opt.count, full_reco, opt.config.P, opt.config.P);
}

}  // namespace foldfarm::data
