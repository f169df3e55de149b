// foldfarm unfold | study warmstart | study reweight-qg (and, from cmd_login.cpp, aggregate,
// bench aggregate and study compare at their places)
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "apps/foldfarm/commands.hpp"
#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/json_file.hpp"
#include "core/base/log.hpp"
#include "core/base/stop_signal.hpp"
#include "core/model/threads.hpp"
#include "core/train/device.hpp"
#include "core/train/parallel.hpp"
#include "dist/cli_options.hpp"
#include "dist/launch.hpp"
#include "ensembles/aggregate.hpp"
#include "ensembles/aggregate_bench.hpp"
#include "ensembles/chain.hpp"
#include "ensembles/chain_task.hpp"
#include "ensembles/studies.hpp"
#include "ensembles/unfold_command.hpp"

namespace foldfarm::app {
namespace {

// A chain config file ("" for no file: an empty object), parsed.
nlohmann::json readConfigFile(const std::string& path) {
  return parseJsonText(path.empty() ? std::string("{}") : readFile(path), path, "fix the config");
}

void registerUnfold(CommandGroups& g) {
  // The request as CLI11 fills it, with the options it parses into the request's functions.
  struct Opts : ensembles::UnfoldRequest {
    dist::DistCli dist;  // --collective-timeout, --dist-backend, --bucket-cap-mb
    ChainDeviceCli device;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = g.root.add_subcommand(
      "unfold",
      "Run one OmniFold chain (bootstrap replica R, ensemble member M) and write its per-event "
      "weights, histograms and history into --out. SIGUSR1/SIGTERM: stop at the next batch, save "
      "state, exit 75; rerun the same command to resume. Under mpirun/srun the step classifiers "
      "train data-parallel over the ranks and rank 0 writes the output");
  cmd->add_option("--mc", o->mc, "MC unfolding file (reco + gen)")->required();
  cmd->add_option("--data", o->data, "data unfolding file (reco used)")->required();
  cmd->add_option(
         "--init", o->init,
         "foundation checkpoint (the --out of foldfarm pretrain, or its model/), or 'none'")
      ->required();
  cmd->add_option("--out", o->out, "chain output directory")->required();
  cmd->add_option("--replica", o->replica, "bootstrap replica (0 = nominal)")->required();
  cmd->add_option("--member", o->member, "ensemble member")->required();
  cmd->add_option(
      "--config", o->config,
      "chain config JSON: classifier (pet+mlp | pet | mlp), observables, mlp {...}, epochs, "
      "patience, lr, batch_size, preset, ... (ensembles/chain.hpp)");
  cmd->add_option("--seed", o->seed, "campaign seed")->capture_default_str();
  cmd->add_option("--iterations", o->iterations, "OmniFold iterations")->capture_default_str();
  cmd->add_option("--threads", o->threads, "intra-op threads (0: all cores)")
      ->capture_default_str();
  o->dist.addTo(*cmd);
  o->device.addTo(*cmd);
  cmd->callback([o] {
    ensembles::UnfoldRequest r = *o;
    r.apply_device_options = [o](nlohmann::json& config) { o->device.applyTo(config); };
    r.dist_options = [o] { return o->dist.resolve(); };
    ensembles::unfoldCommand(r);
  });
}

void registerWarmstart(CommandGroups& g) {
  struct Opts {
    std::string mc, data, init, out, config;
    uint64_t seed = 1;
    int threads = 0;
    bool no_plot = false;
    ChainDeviceCli device;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = g.study.add_subcommand(
      "warmstart",
      "Train OmniFold iteration 0 step 1 from the foundation and from scratch on the same data; "
      "write both validation-loss curves (warmstart.json, warmstart.png) and the ratio of epochs "
      "needed to reach the scratch model's best validation loss");
  cmd->add_option("--mc", o->mc, "MC unfolding file")->required();
  cmd->add_option("--data", o->data, "data unfolding file")->required();
  cmd->add_option("--init", o->init,
                  "foundation checkpoint (the --out of foldfarm pretrain, or its model/)")
      ->required();
  cmd->add_option("--out", o->out, "output directory")->required();
  cmd->add_option("--config", o->config, "chain config JSON (epochs, lr, batch_size, ...)");
  cmd->add_option("--seed", o->seed, "seed")->capture_default_str();
  cmd->add_option("--threads", o->threads, "intra-op threads (0: all cores)")
      ->capture_default_str();
  cmd->add_flag("--no-plot", o->no_plot, "skip the PNG");
  o->device.addTo(*cmd);
  cmd->callback([o] {
    configureThreads(o->threads);
    nlohmann::json config = readConfigFile(o->config);
    o->device.applyTo(config);
    ensembles::WarmstartStudyOptions so;
    so.mc_path = o->mc;
    so.data_path = o->data;
    so.init = o->init;
    so.seed = o->seed;
    so.plot = !o->no_plot;
    so.config = ensembles::chainConfigFromJson(config, o->config.empty() ? "config" : o->config);
    nlohmann::json r = ensembles::runWarmstartStudy(so, o->out);
    r.erase("warm");
    r.erase("scratch");
    std::cout << r.dump(2) << std::endl;
  });
}

void registerReweightQg(CommandGroups& g) {
  struct Opts {
    std::string jets;
    std::string init = "none", out, config;
    uint64_t seed = 1;
    int folds = 5, members = 3, bins = 0;
    int threads = 0;
    ChainDeviceCli device;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = g.study.add_subcommand(
      "reweight-qg",
      "Reweight gluon jets to quark jets with the OmniFold step-2 machinery, cross-fitted (the "
      "models trained on all other folds score each fold; weights averaged over ensemble "
      "members); prints the triangular discriminators "
      "of mass, width and multiplicity before and after, and the quark half-vs-half "
      "discriminator as the noise scale (reweight_qg.json)");
  cmd->add_option("--jets", o->jets, "jets file with pid (1 = quark, 0 = gluon)")->required();
  cmd->add_option(
         "--init", o->init,
         "foundation checkpoint (the --out of foldfarm pretrain, or its model/), or 'none'")
      ->capture_default_str();
  cmd->add_option("--out", o->out, "output directory")->required();
  cmd->add_option("--config", o->config, "chain config JSON (preset, epochs, lr, ...)");
  cmd->add_option("--seed", o->seed, "seed")->capture_default_str();
  cmd->add_option("--folds", o->folds, "cross-fit folds (>= 2)")->capture_default_str();
  cmd->add_option("--members", o->members, "ensemble members per fold (>= 1)")
      ->capture_default_str();
  cmd->add_option("--threads", o->threads, "intra-op threads (0: all cores)")
      ->capture_default_str();
  cmd->add_option("--bins", o->bins,
                  "also report the discriminators on this many equal-width bins between the "
                  "1st and 99th percentile of the jets (0: campaign binnings only)")
      ->capture_default_str();
  o->device.addTo(*cmd);
  cmd->callback([o] {
    configureThreads(o->threads);
    nlohmann::json config = readConfigFile(o->config);
    o->device.applyTo(config);
    if (o->bins < 0)
      throw InputError("reweight-qg: --bins must be >= 0 (got " + std::to_string(o->bins) + ")");
    ensembles::QuarkGluonStudyOptions so;
    so.bins = o->bins;
    so.folds = o->folds;
    so.members = o->members;
    so.jets_path = o->jets;
    so.init = o->init;
    so.seed = o->seed;
    so.config = ensembles::chainConfigFromJson(config, o->config.empty() ? "config" : o->config);
    nlohmann::json r = ensembles::runQuarkGluonStudy(so, o->out);
    r.erase("fit");
    std::cout << r.dump(2) << std::endl;
  });
}

}  // namespace

void registerEnsembleCommands(CommandGroups& g) {
  registerUnfold(g);
  registerAggregationCommands(g);
  registerWarmstart(g);
  registerReweightQg(g);
}

}  // namespace foldfarm::app
