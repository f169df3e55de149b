#pragma once
// The `foldfarm` command line is thin: each area registers its subcommands on the groups
// below; callbacks parse options into the libraries' types and call them. Errors are
// thrown (foldfarm::Error and subclasses); main() prints them as one line and exits with
// Error::exitCode().
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "ensembles/aggregate.hpp"
#include "ensembles/campaign_aggregate.hpp"
#include "jobs/task_state.hpp"

namespace foldfarm::app {

struct CommandGroups {
  CLI::App& root;   // foldfarm <cmd>
  CLI::App& bench;  // foldfarm bench <what>
  CLI::App& study;  // foldfarm study <what>
};

void registerDataCommands(CommandGroups& g);      // cmd_data.cpp: data …, bench data
void registerModelCommands(CommandGroups& g);     // cmd_model.cpp: model info, pretrain, finetune,
                                                  // generate, bench pet|optim|mlp
void registerDistCommands(CommandGroups& g);      // cmd_dist.cpp: bench allreduce, bench ddp
void registerEnsembleCommands(CommandGroups& g);  // cmd_ensembles.cpp: unfold, study
                                                  // warmstart|reweight-qg; aggregation commands
void registerCampaignCommands(
    CommandGroups& g);  // cmd_campaign.cpp: campaign …, worker, bench scheduler
void registerSlurmCommands(CommandGroups& g);   // cmd_slurm.cpp: slurm render|submit|status
void registerReportCommands(CommandGroups& g);  // cmd_report.cpp: report, study scaling
// (Each of these registers the commands of cmd_login.cpp that belong to it, in place.)

// cmd_login.cpp (no LibTorch): the commands a login node runs, which `foldfarm` runs itself
// (front.cpp) and `foldfarm-torch` has too, at their places among the others.
void registerLoginCommands(CommandGroups& g);  // the front end's: all of the below
CLI::App* addCampaignGroup(CLI::App& root);    // foldfarm campaign
CLI::App* addSlurmGroup(CLI::App& root);       // foldfarm slurm
void registerCampaignStatusCommand(CLI::App& campaign);
void registerCampaignCancelCommand(CLI::App& campaign);
void registerCampaignRepairCommand(CLI::App& campaign);
void registerCampaignAggregateCommand(CLI::App& campaign);
void registerSlurmStatusCommand(CLI::App& slurm);
void registerAggregationCommands(CommandGroups& g);  // aggregate, bench aggregate, study compare
void registerReportCommand(CommandGroups& g);        // report

// The aggregation's choices on a command line (ensembles/campaign_aggregate.hpp).
using AggregateArgs = ensembles::AggregateChoices;
inline void addAggregateOptions(CLI::App& app, AggregateArgs& a) {
  app.add_flag("--no-plots", a.no_plots, "Skip the PNG figures (an earlier run's are removed)");
  app.add_option("--event-weights", a.event_weights,
                 "Columns of event_weights.h5: all (the default); central (the nominal and each "
                 "variation, no bootstrap replicas: a few columns instead of hundreds); none (no "
                 "file). A campaign's default: its spec's aggregate.event_weights")
      ->check(CLI::IsMember({"all", "central", "none"}));
  app.add_option("--shift-noise", a.shift_noise,
                 "Each systematic source's covariance: keep (the default: s s^T of its shift s) "
                 "or subtract (the shift less its own noise in quadrature per bin, the noise "
                 "estimated from its chains: a shift within its noise then adds little to the "
                 "total). A campaign's default: its spec's aggregate.shift_noise")
      ->check(CLI::IsMember({"keep", "subtract"}));
  app.add_option("--binning", a.binning,
                 "Rebin without training again: the observables named are histogrammed anew from "
                 "each chain's per-event weights (weights.h5) and the simulation it read, e.g. "
                 "'{\"mass\": {\"lo\": 0, \"hi\": 300, \"bins\": 60}}' or a JSON file of it "
                 "(a chain config's \"binning\" form); the others keep the chains' binning")
      ->check([](const std::string& v) {
        return v.empty() ? std::string("empty: give the JSON or a file holding it") : std::string();
      });
}

// A list option's default as a user types it ("1,2,4": the options take ',' as delimiter),
// for default_str(). Not capture_default_str(): CLI11 renders a vector through operator<<
// where one is declared, which LibTorch's headers do, so the front end (no LibTorch) and
// foldfarm-torch printed the same default differently.
template <class T>
std::string commaList(const std::vector<T>& values) {
  std::string s;
  for (const T& v : values) s += (s.empty() ? "" : ",") + std::to_string(v);
  return s;
}

// --aggregate of `campaign run`, `resume`, `retry` (`where`: under a launcher, rank 0 does it)
// and `slurm submit` (the submitter does it, once the last array's results are in).
inline CLI::Option* addAggregateFlag(CLI::App& app, bool& aggregate,
                                     const char* where = " (on rank 0 under mpirun/srun)") {
  return app.add_flag("--aggregate", aggregate,
                      std::string("When every task is done, aggregate the chains into D/aggregate "
                                  "as `campaign aggregate D` does") +
                          where);
}

// The long names (without dashes) of the options given on `app`'s command line ("lr-factor").
inline std::set<std::string> givenOptionNames(const CLI::App& app) {
  std::set<std::string> given;
  for (const CLI::Option* o : app.get_options())
    if (o->count() > 0 && !o->get_lnames().empty()) given.insert(o->get_lnames().front());
  return given;
}

// --device (cpu|cuda|auto), and where given --precision (fp32|bf16) and --fixed-shapes, as
// every training command takes them (core/train/device.hpp, trainer.hpp).
// What every --device takes (a config file's "device" too: parseDeviceRequest).
inline const std::vector<std::string> kDeviceNames = {"cpu", "cuda", "gpu", "auto"};

inline void addDeviceOptions(CLI::App& app, std::string& device, std::string* precision,
                             bool* fixed_shapes, bool* cuda_graphs = nullptr) {
  app.add_option("--device", device,
                 "cpu, cuda (or gpu) or auto: this process's GPU (by local rank, or the one a "
                 "campaign slot's CUDA_VISIBLE_DEVICES leaves) when LibTorch has CUDA, else the "
                 "CPU")
      ->check(CLI::IsMember(kDeviceNames))
      ->capture_default_str();
  if (precision != nullptr)
    app.add_option("--precision", *precision,
                   "fp32, or bf16: autocast to bfloat16 on the GPU with fp32 master weights")
        ->check(CLI::IsMember({"fp32", "bf16"}))
        ->capture_default_str();
  if (fixed_shapes != nullptr)
    app.add_flag("--fixed-shapes", *fixed_shapes,
                 "Pad each batch to the batch size and its width to the next bucket edge (a few "
                 "shapes per data set; same loss and gradients)");
  if (cuda_graphs != nullptr)
    app.add_flag("--cuda-graphs", *cuda_graphs,
                 "Capture each batch shape's forward and backward in a CUDA graph and replay it "
                 "(a GPU, one rank; implies --fixed-shapes)");
}

// The device options of a command that trains from a chain config (unfold, the studies):
// addTo() adds --device, --precision, --fixed-shapes and --cuda-graphs; applyTo() writes the
// ones given on the command line over the config's keys (and --device's default where the
// config has no "device"), before the config is parsed.
struct ChainDeviceCli {
  std::string device = "auto", precision = "fp32";
  bool fixed_shapes = false, cuda_graphs = false;
  const CLI::Option *device_opt = nullptr, *precision_opt = nullptr, *fixed_opt = nullptr,
                    *graphs_opt = nullptr;

  void addTo(CLI::App& app) {
    addDeviceOptions(app, device, &precision, &fixed_shapes, &cuda_graphs);
    device_opt = app.get_option("--device");
    precision_opt = app.get_option("--precision");
    fixed_opt = app.get_option("--fixed-shapes");
    graphs_opt = app.get_option("--cuda-graphs");
  }
  template <class Json>
  void applyTo(Json& config) const {
    if (!config.is_object()) return;  // the config's parser names the file and the problem
    if (device_opt->count() > 0 || !config.contains("device")) config["device"] = device;
    if (precision_opt->count() > 0) config["precision"] = precision;
    if (fixed_opt->count() > 0) config["fixed_shapes"] = fixed_shapes;
    if (graphs_opt->count() > 0) config["cuda_graphs"] = cuda_graphs;
  }
};

// Registers the task kinds this executable knows (noop, sleep, command, chain). Any command
// that opens a campaign calls it first: opening validates the spec's task kind. Defined by
// each executable: foldfarm-torch's runs chains (cmd_campaign.cpp); the front end knows the
// chain kind by name only (front.cpp), which is what reading a campaign needs.
void registerCampaignTaskKinds();
// Parses `args` as the arguments of `app`'s subcommand `name`, which has its options but
// no callback: nothing runs. InputError "<who>: the arguments are not those of `foldfarm
// <full>`: ..." when they would not parse.
void checkArgumentsParse(CLI::App& app, const std::string& name, std::vector<std::string> args,
                         const std::string& who, const std::string& full);
// Parses `args` as `foldfarm pretrain`'s arguments without running anything: InputError
// naming `who` when they would not start (a missing --data or --out, an unknown option).
void checkPretrainArguments(const std::vector<std::string>& args, const std::string& who);
// The same for `foldfarm campaign run`'s arguments (`args` from the campaign directory on).
void checkCampaignRunArguments(const std::vector<std::string>& args, const std::string& who);
// `--overwrite` on a command that writes one file (--out): without it an existing file there
// is refused before anything is read (refuseExistingOut: InputError naming it, advising
// --overwrite); with it the file is replaced atomically.
std::shared_ptr<bool> addOverwriteFlag(CLI::App& cmd);
void refuseExistingOut(const std::string& out, bool overwrite);
// `foldfarm campaign cancel D`: the journal's unfinished tasks -> cancelled; for a campaign
// that submitted to Slurm, its array jobs are scancelled too (cmd_login.cpp).
void cancelCampaign(const std::string& dir, double wait_s);

}  // namespace foldfarm::app
