// Does a chain unfold what it should? A closure sample that differs from the simulation only
// in tau21: the "data" are the simulated events themselves, weighted by exp(a (tau21_gen -
// mean)), so every other observable moves only through its correlation with tau21. The
// observable-level MultiFold baseline ("mlp") must recover most of tau21's shift, and the
// default chain (PET boosted on that baseline) must not recover less: a chain that stops
// moving an observable that the baseline moves fails here.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/data/jet_writer.hpp"
#include "core/data/synth.hpp"
#include "core/model/threads.hpp"
#include "ensembles/aggregate.hpp"
#include "ensembles/chain_task.hpp"

namespace fs = std::filesystem;
using namespace foldfarm;
using namespace foldfarm::ensembles;

namespace {

constexpr int64_t kEvents = 2500;
constexpr float kSlope = 5.0f;  // tau21's std is ~0.15: a shift of ~0.1 in its mean

class Tau21Closure : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    configureThreads(1);
    root_ = fs::temp_directory_path() / ("ff_closure_" + std::to_string(::getpid()));
    fs::create_directories(root_);
    data::SynthConfig c = data::SynthConfig::unfoldDefaults(data::Tune::kSim);
    c.P = 48;
    data::UnfoldArrays u = data::synthUnfold(c, 21, 0, kEvents);
    data::writeUnfoldFile((root_ / "mc.h5").string(), u);
    double mean = 0;
    for (int64_t i = 0; i < kEvents; ++i) mean += u.gen_subs[static_cast<size_t>(i) * 6 + 5];
    mean /= kEvents;
    u.weights.resize(static_cast<size_t>(kEvents));
    for (int64_t i = 0; i < kEvents; ++i)
      u.weights[static_cast<size_t>(i)] =
          std::exp(kSlope * static_cast<float>(u.gen_subs[static_cast<size_t>(i) * 6 + 5] - mean));
    data::writeUnfoldFile((root_ / "data.h5").string(), u);
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  // tau21's recovered shift (and the summary) of one nominal chain with this config.
  static nlohmann::json unfold(const std::string& name, const nlohmann::json& config) {
    const nlohmann::json params = {{"mc", (root_ / "mc.h5").string()},
                                   {"data", (root_ / "data.h5").string()},
                                   {"init", "none"},
                                   {"replica", 0},
                                   {"member", 0},
                                   {"campaign_seed", 3},
                                   {"iterations", 2},
                                   {"config", config}};
    const fs::path run = root_ / name;
    EXPECT_EQ(runChainTask(params, run.string()), 0);
    AggregateOptions o;
    o.plots = false;
    return aggregateRunsWithOptions({run.string()}, (root_ / (name + "_agg")).string(),
                                    (root_ / "data.h5").string(), o);
  }

  static fs::path root_;
};
fs::path Tau21Closure::root_;

}  // namespace

TEST_F(Tau21Closure, DefaultChainMovesTau21AsMuchAsTheObservableBaseline) {
  const nlohmann::json mlp = unfold("mlp", {{"classifier", "mlp"}});
  const nlohmann::json boosted =
      unfold("boosted", {{"preset", "tiny"}, {"epochs", 1}, {"batch_size", 128}, {"lr", 1e-3}});
  const auto& t_mlp = mlp["observables"]["tau21"];
  const auto& t_boost = boosted["observables"]["tau21"];
  std::cout << "tau21 shift recovered: mlp " << t_mlp["shift_recovered"] << ", pet+mlp "
            << t_boost["shift_recovered"] << "; delta prior " << t_mlp["delta_prior"] << ", mlp "
            << t_mlp["delta_unfolded"] << ", pet+mlp " << t_boost["delta_unfolded"] << ", floor "
            << t_mlp["delta_floor"] << "\n";
  // The sample is built so that the prior is far above the floor.
  ASSERT_GT(t_mlp["delta_prior"].get<double>(), 3 * t_mlp["delta_floor"].get<double>());
  EXPECT_GT(t_mlp["shift_recovered"].get<double>(), 0.7);
  EXPECT_GT(t_boost["shift_recovered"].get<double>(), 0.7);
  EXPECT_GT(t_boost["shift_recovered"].get<double>(), t_mlp["shift_recovered"].get<double>() - 0.1);
  EXPECT_LT(t_boost["delta_unfolded"].get<double>(), t_mlp["delta_prior"].get<double>() / 3);
}
