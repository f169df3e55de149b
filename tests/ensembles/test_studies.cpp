// Quark/gluon reweighting on the real jets of quark_gluon_2000.h5 with the OmniFold step-2
// machinery (tiny PET from scratch, 10 epochs, 2 folds): every held-out discriminator of
// mass, width and multiplicity must shrink clearly; bad options and files are refused
// before anything is written.
#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/base/error.hpp"
#include "core/model/threads.hpp"
#include "core/train/device.hpp"
#include "ensembles/studies.hpp"

namespace fs = std::filesystem;
using namespace foldfarm;
using namespace foldfarm::ensembles;

namespace {

const std::string kQg = std::string(FOLDFARM_SHARED_DATA_DIR) + "/quark_gluon_2000.h5";

fs::path tempDir(const char* name) {
  fs::path p = fs::temp_directory_path() /
               (std::string("ff_studies_") + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p;
}

QuarkGluonStudyOptions quickOptions() {
  QuarkGluonStudyOptions o;
  o.jets_path = kQg;
  o.seed = 5;
  o.folds = 2;
  o.members = 1;
  o.config = chainConfigFromJson(
      {{"preset", "tiny"}, {"epochs", 10}, {"patience", 3}, {"batch_size", 128}, {"lr", 3e-4}},
      "test");
  return o;
}

TEST(QuarkGluonStudy, ReweightedGluonsMoveTowardsQuarksOnHeldOutJets) {
  configureThreads(1);
  const fs::path out = tempDir("qg");
  QuarkGluonStudyOptions opts = quickOptions();
  opts.bins = 20;
  const nlohmann::json r = runQuarkGluonStudy(opts, out.string());
  ASSERT_TRUE(fs::exists(out / "reweight_qg.json"));
  EXPECT_EQ(r["heldout_jets"], 2000);
  EXPECT_EQ(r["heldout_quarks"], 990);
  EXPECT_EQ(r["fit"].size(), 2u);
  // Trained where the config's device (auto) resolved, and said so.
  EXPECT_EQ(r["device"]["requested"], "auto");
  // Weights apply to the gluons only and are not degenerate.
  EXPECT_EQ(r["weights"]["events"], 1010);
  EXPECT_GT(r["weights"]["ess_fraction"].get<double>(), 0.1);
  for (const char* ob : {"mass", "width", "multiplicity"}) {
    const auto& o = r["observables"][ob];
    const double before = o["delta_unweighted"], after = o["delta_reweighted"];
    // Gluon and quark jets differ far beyond the histogram noise ...
    EXPECT_GT(before, 2.0 * o["delta_quark_half_vs_half"].get<double>()) << ob;
    // ... and the reweighting removes most of the difference (about 2-3x after 10 epochs).
    EXPECT_GT(before / after, 1.6) << ob << ": " << before << " -> " << after;
    // The same weights on 20 bins matched to the sample: the reduction holds there too.
    const auto& m = r["observables_matched_binning"][ob];
    EXPECT_EQ(m["bins"], 20) << ob;
    EXPECT_GT(m["delta_unweighted"].get<double>(),
              2.0 * m["delta_quark_half_vs_half"].get<double>())
        << ob;
    EXPECT_GT(m["delta_unweighted"].get<double>() / m["delta_reweighted"].get<double>(), 1.6) << ob;
  }
  fs::remove_all(out);
}

TEST(QuarkGluonStudy, BadInputWritesNothing) {
  const fs::path out = tempDir("bad");
  QuarkGluonStudyOptions o = quickOptions();
  o.folds = 1;
  EXPECT_THROW(runQuarkGluonStudy(o, out.string()), InputError);
  o = quickOptions();
  o.members = 0;
  EXPECT_THROW(runQuarkGluonStudy(o, out.string()), InputError);
  o = quickOptions();
  o.jets_path = (out.parent_path() / "no_such_jets.h5").string();
  EXPECT_THROW(runQuarkGluonStudy(o, out.string()), InputError);
  EXPECT_FALSE(fs::exists(out));
  if (!torchHasCuda()) {  // a GPU asked for where there is none: refused before any work
    o = quickOptions();
    o.config.device = "cuda";
    EXPECT_THROW(runQuarkGluonStudy(o, out.string()), InputError);
    EXPECT_FALSE(fs::exists(out));
  }
}

}  // namespace
