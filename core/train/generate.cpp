#include "core/train/generate.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <random>

#include <nlohmann/json.hpp>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/progress.hpp"
#include "core/base/seed.hpp"
#include "core/data/jet_reader.hpp"
#include "core/data/jet_writer.hpp"
#include "core/model/diffusion.hpp"
#include "core/model/pet.hpp"
#include "core/train/checkpoint.hpp"
#include "core/train/device.hpp"

namespace foldfarm {

using nlohmann::json;

namespace {

// Jet feature f (standardised) of a generated jet: the class's normal distribution, drawn
// again where it gives no jet (pT <= 0, mass < 0; before: jets of negative pT from a class
// of wide spread). Draws that are physical from the start are those of the plain normal.
double drawJetFeature(int f, float mean, float sd, const data::FeatureStats& st,
                      std::normal_distribution<double>& norm, std::mt19937_64& rng,
                      const GenerateOptions& a) {
  constexpr int kPt = 0, kMass = 2, kTries = 1000;
  for (int k = 0; k < kTries; ++k) {
    const double z = mean + sd * norm(rng);
    const double raw = z * st.jet_std[f] + st.jet_mean[f];
    if ((f != kPt || raw > 0) && (f != kMass || raw >= 0)) return z;
  }
  throw InputError(a.checkpoint + ": class " + std::to_string(a.class_index) + "'s jet " +
                   (f == kPt ? "pT" : "mass") + " distribution (mean " +
                   std::to_string(mean * st.jet_std[f] + st.jet_mean[f]) + ", spread " +
                   std::to_string(sd * st.jet_std[f]) + ") gave no physical value in " +
                   std::to_string(kTries) +
                   " draws: its pretraining jets have no such values; pretrain on real jets");
}

}  // namespace

data::JetArrays generateJets(const GenerateOptions& a) {
  if (a.jets < 1) throw InputError("generate: --jets must be >= 1, not " + std::to_string(a.jets));
  // The sampler's error is long converged by a thousand steps; 10^5 is surely a typo's bound.
  if (a.steps < 1 || a.steps > 100000)
    throw InputError("generate: --steps must lie in 1..100000 (64 is the default), not " +
                     std::to_string(a.steps));
  if (a.batch < 1) throw InputError("generate: the batch must be >= 1");
  const Checkpoint ck = readCheckpoint(resolveCheckpointDir(a.checkpoint));
  if (!ck.meta.config.generator)
    throw InputError(a.checkpoint +
                     ": checkpoint has no generator head; use a pretrained checkpoint");
  if (a.class_index < 0 || a.class_index >= ck.meta.config.num_classes) {
    // The classes by index and name (before: their count alone).
    std::string classes;
    for (int k = 0; k < ck.meta.config.num_classes; ++k)
      classes += (k ? ", " : "") + std::to_string(k) +
                 (static_cast<size_t>(k) < ck.meta.class_names.size()
                      ? " " + ck.meta.class_names[static_cast<size_t>(k)]
                      : std::string());
    throw InputError("--class " + std::to_string(a.class_index) + " is out of range for " +
                     a.checkpoint + " (" + std::to_string(ck.meta.config.num_classes) +
                     " classes: " + classes + ")");
  }
  if (!ck.meta.extra.contains("jet_conditioning"))
    throw InputError(a.checkpoint +
                     ": no jet conditioning statistics; use a checkpoint written by foldfarm "
                     "pretrain");
  const json cond = ck.meta.extra["jet_conditioning"];
  const std::string key = std::to_string(a.class_index);
  if (!cond.contains(key))
    throw InputError(a.checkpoint + ": no jet conditioning statistics for class " + key +
                     ": its pretraining saw fewer than 2 jets of that class; pretrain on more "
                     "jets of it, or choose another --class");
  const int64_t P = ck.meta.extra.value("num_particles", int64_t{128});
  const DeviceChoice dev = selectDevice(a.device);
  Pet model = loadPet(ck, /*prefer_ema=*/true);
  model->to(dev.device);
  model->eval();
  const auto mean = cond.at(key).at("mean").get<std::vector<float>>();
  const auto sd = cond.at(key).at("std").get<std::vector<float>>();
  const auto& st = ck.meta.stats;
  std::mt19937_64 rng(deriveSeed({a.seed, 0x67656eULL}));
  std::normal_distribution<double> norm;
  at::Generator gen =
      at::make_generator<at::CPUGeneratorImpl>(deriveSeed({a.seed, 0x6e6f697365ULL}));

  // The jets are held in memory until written: refused up front when they cannot be.
  data::requireWithinReadBudget(
      "generate", "generating " + std::to_string(a.jets) + " jets",
      static_cast<double>(a.jets) * (P * data::kNumParticleFeatures + data::kNumJetFeatures) * 4.0,
      "generate fewer jets per file (--jets) or use a machine with more memory");
  data::JetArrays out = data::JetArrays::zeros(a.jets, P, true);
  Progress progress("generate", a.jets, "jet");
  for (int64_t begin = 0; begin < a.jets; begin += a.batch) {
    const int64_t n = std::min(a.batch, a.jets - begin);
    torch::Tensor jets = torch::zeros({n, 4});
    torch::Tensor mask = torch::zeros({n, P});
    std::vector<int64_t> mult(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      for (int f = 0; f < 4; ++f) jets[i][f] = drawJetFeature(f, mean[f], sd[f], st, norm, rng, a);
      const double raw_mult = jets[i][3].item<double>() * st.jet_std[3] + st.jet_mean[3];
      mult[static_cast<size_t>(i)] = std::clamp<int64_t>(std::llround(raw_mult), 1, P);
      jets[i][3] =
          (static_cast<double>(mult[static_cast<size_t>(i)]) - st.jet_mean[3]) / st.jet_std[3];
      mask[i].narrow(0, 0, mult[static_cast<size_t>(i)]).fill_(1.0);
    }
    const torch::Tensor labels = torch::full({n}, a.class_index, torch::kLong);
    const torch::Tensor x = sampleParticles(model, mask.to(dev.device), jets.to(dev.device),
                                            labels.to(dev.device), a.steps, gen)
                                .cpu();
    for (int64_t i = 0; i < n; ++i) {
      float* jet = out.jet(begin + i);
      for (int f = 0; f < 4; ++f)
        jet[f] = jets[i][f].item<float>() * st.jet_std[f] + st.jet_mean[f];
      jet[3] = static_cast<float>(mult[static_cast<size_t>(i)]);
      out.labels[static_cast<size_t>(begin + i)] = a.class_index;
      auto acc = x.accessor<float, 3>();
      for (int64_t j = 0; j < mult[static_cast<size_t>(i)]; ++j) {
        float* p = out.particle(begin + i, j);
        for (int f = 0; f < 3; ++f) p[f] = acc[i][j][f] * st.particle_std[f] + st.particle_mean[f];
        // Feature 2 = log(1 - pT/pT_jet) is negative for a real particle; keep it non-zero.
        p[2] = std::min(p[2], -1e-6f);
      }
    }
    progress.update(begin + n);
  }
  progress.finish();
  return out;
}

void generateJetFile(const GenerateOptions& o, const std::string& out) {
  requireOutputDirectory(out);
  const data::JetArrays jets = generateJets(o);
  data::writeJetFile(out, jets,
                     json{{"generated_by", "foldfarm generate"},
                          {"checkpoint", o.checkpoint},
                          {"class", o.class_index},
                          {"steps", o.steps},
                          {"seed", o.seed}});
}

}  // namespace foldfarm
