#pragma once
// Studies built on the OmniFold machinery.
//
// Warm start (the OmniLearn paper reports warm-started OmniFold converging about twice as
// fast; docs/closure.md compares): iteration 0 step 1 of the nominal chain is trained twice
// on the same data, seeds and split - from the foundation checkpoint and from scratch - with
// early stopping off, so both validation-loss curves are complete. Reported: both curves,
// the scratch model's best validation loss L*, the epochs each needs to reach L* (scratch:
// its best epoch + 1; warm: first epoch with val loss <= L*, null if never) and their ratio
// (scratch / warm).
// Outputs in out_dir: warmstart.json, warmstart.png.
//
// Quark/gluon reweighting (real jets): the step-2 machinery - a one-logit PET classifier,
// weights f/(1-f) sanitised and normalised - reweights the gluon jets of a jets file
// (label 0) to its quark jets (label 1). The jets are split into `folds` parts by a seeded
// permutation and cross-fitted: for each part, `members` classifiers (different
// initialisation and data order) are trained on the other parts and score it, so every
// jet's weight comes from models that never saw it; the weights are the mean of the
// members' normalised weights (OmniFold ensembling). The triangular discriminators (x10^3,
// binnings of core/data/histogram.hpp) between quark and gluon jets are computed on all
// jets (all held out), for mass, width and multiplicity, unweighted, reweighted, and
// reweighted by member 0 alone. As a scale for the histogram noise, the discriminator
// between the quark jets of the two halves of the permutation is reported, and from it an
// estimate of the noise floor of the reweighted comparison (scaled by 1/N1 + 1/N2 to the
// effective size of the reweighted gluons and the number of quarks). Outputs in out_dir:
// reweight_qg.json.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "ensembles/chain.hpp"

namespace foldfarm::ensembles {

struct WarmstartStudyOptions {
  std::string mc_path, data_path, init;  // init: foundation checkpoint directory
  uint64_t seed = 1;
  ChainConfig config;  // epochs, lr, ... (patience ignored: curves run to config.epochs)
  bool plot = true;
};
nlohmann::json runWarmstartStudy(const WarmstartStudyOptions& o, const std::string& out_dir);

struct QuarkGluonStudyOptions {
  std::string jets_path;      // jets layout with pid (1 = quark, 0 = gluon)
  std::string init = "none";  // foundation checkpoint or "none"
  uint64_t seed = 1;
  int folds = 5;    // cross-fit parts (>= 2); each classifier trains on (folds-1)/folds
  int members = 3;  // ensemble members per part (>= 1)
  // > 0: also report the discriminators on `bins` equal-width bins between the 1st and 99th
  // percentile of the pooled jets (binning matched to this sample; the campaign binnings
  // are made for another jet sample and, at 1000 jets per class, are noise-dominated).
  int bins = 0;
  ChainConfig config;
};
nlohmann::json runQuarkGluonStudy(const QuarkGluonStudyOptions& o, const std::string& out_dir);

}  // namespace foldfarm::ensembles
