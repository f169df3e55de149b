#pragma once
// One OmniFold chain as a campaign task: the entry point of the campaign orchestrator's
// workers (and of `foldfarm unfold`).
//
// params (JSON object):
//   "mc"            path of the MC unfolding file (reco + gen, unfold layout) required
//   "data"          path of the data unfolding file (reco used)                required
//   "init"          foundation checkpoint directory, or "none" (from scratch)  required
//   "replica"       bootstrap replica r >= 0 (0 = nominal, data weights 1)     required
//   "member"        ensemble member m >= 0                                     required
//   "campaign_seed" unsigned integer                                           default 1
//   "iterations"    OmniFold iterations n >= 1                                 default 4
//   "config"        chain configuration object (ensembles/chain.hpp ChainConfig keys)
//   "bootstrap"     "data" (default) | "mc": which sample replicas resample
//   "variation"     object naming the systematic variation (recorded in result.json)
//   "warm_from"     a completed chain directory to start each step from      default ""
//   "keep_models"   keep every step's models under task_dir/models           default false
//   "threads"       intra-op threads (<= 0: leave the process setting alone)   default 0
//
// Writes the chain output (ensembles/chain_output.hpp) into task_dir atomically: result.json
// appears last. Returns
//   0   done (also when task_dir already holds a completed chain with the same params);
//   75  interrupted (stopRequested(): SIGUSR1/SIGTERM) with the state saved under
//       task_dir/state; calling again with the same params resumes from it and ends with
//       the same weights as an uninterrupted chain;
//   2   bad input (unreadable files, bad params, state of different params): one line is
//       logged naming the file or key; nothing is written;
//   1   any other failure (logged).
// Never throws. With `reason`, the error's one line is also left there (a campaign's journal
// records it as the task's reason).
//
// Loaded datasets and the foundation checkpoint are cached in-process, keyed by path, size
// and modification time, so a persistent worker running many chains reads them once.
//
// Thread-safety: not re-entrant; one chain at a time per process (LibTorch thread settings
// and the stop flag are process-wide).
#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "jobs/task_kind.hpp"

namespace foldfarm {
class ParallelContext;
}
namespace foldfarm::jobs {
struct CampaignSpec;
}

namespace foldfarm::ensembles {

// `campaign_task`: task_dir is a campaign's task directory and warm_from its sibling (from
// chainParamsOfCampaignTask): models of it lost or damaged end with exit 66 (kExitNeedLost),
// the reason naming `campaign retry D --failed`; otherwise with 2, as any bad input.
int runChainTask(const nlohmann::json& params, const std::string& task_dir,
                 std::string* reason = nullptr, bool campaign_task = false);
// The same, for a command that reports errors itself: throws InputError (bad input),
// InterruptedError (state saved) or Error instead of returning a status.
// With `ctx`, the chain's step classifiers train data-parallel over its ranks (every rank
// calls this with the same params; rank 0 writes the output).
void runChainTaskOrThrow(const nlohmann::json& params, const std::string& task_dir,
                         ParallelContext* ctx = nullptr);

// The chain's input files as its run will read them, before any task starts (`campaign
// init` and `run`): the simulation an unfolding file of both levels, the data one with its
// reco level (the file's datasets and shapes validated; of its values only the selection
// flags read: some event must pass each), and the foundation
// (checkChainFoundation). InputError naming the file and what it lacks.
void checkChainTaskInputs(const nlohmann::json& params);
// The same for a campaign task's params (jobs::CampaignSpec::taskDef), and what the
// aggregation will read: `inputs.truth`, and a non_closure variation's data, whose gen level
// is its truth (checkTruthFile). InputError naming the key and the file.
void checkCampaignChainTaskInputs(const nlohmann::json& task_params);
// Every value those files hold that a task or the aggregation will read (the simulation's and
// the data's particles, jets, observables, flags and weights: data::JetFile::checkValues; the
// truth's as checkTruthValues), a piece at a time, with a progress line for a large file;
// a file is read in a role ("": as a chain reads it, "truth") only when first(path, role)
// says so (jobs::InputValueReads::first: each file once, the unchanged ones never). At
// `campaign init` and `campaign accept-inputs` only (jobs::TaskKindTraits::check_input_values).
// InputError naming the key, file and row.
using FirstRead = std::function<bool(const std::string& path, const std::string& role)>;
void checkCampaignChainTaskInputValues(const nlohmann::json& task_params, const FirstRead& first);
// The foundation of chain params with an init: a checkpoint (either form resolveCheckpointDir
// takes) whose metadata and tensors pass their checksums, read whole once per version of its
// meta.json in this process, whose preset the chain config does not contradict
// (refusePresetBesideFoundation). InputError naming the directory or file otherwise: a
// directory whose pretraining has not written its model yet is refused, not found by every
// task when it starts.
void checkChainFoundation(const nlohmann::json& params);

// The chain params above from a campaign task's params (jobs/campaign_spec.hpp taskDef():
// inputs, chain, replica, member, seed, threads; for a variation's task also variation and
// warm_from_task, resolved against the campaign's tasks/ directory that holds task_dir;
// keep_models for a nominal task that variations start from).
nlohmann::json chainParamsOfCampaignTask(const nlohmann::json& campaign_params,
                                         const std::string& task_dir);

// (campaign init, run) Refuses, before anything is created or run, a campaign of `kind`
// "chain" whose tasks could not train as configured: GPUs allocated (`gpus` > 0) to chains
// that this LibTorch, or their config's device cpu, would train on the CPU (the GPUs would
// idle all campaign long), or a GPU (config "device" cuda), CUDA graphs (config
// "cuda_graphs") or bf16 PET steps (config "precision") asked for chains that get no GPU
// (every task would fail when it starts). `chain` is the spec's chain object (its "config",
// or the config keys inline); `origin` names the spec.
void refuseUntrainableChainCampaign(const std::string& kind, int gpus, const nlohmann::json& chain,
                                    const std::string& origin);

// A chain config that names a PET "preset" beside a foundation (init not "none") must name
// the foundation's: the foundation fixes the model, so another preset would be ignored.
// InputError naming both otherwise. `foundation_preset` is the checkpoint's config.preset.
void refusePresetBesideFoundation(const nlohmann::json& params,
                                  const std::string& foundation_preset);
// (campaign init, plan) chainSpecFromJson's checks of a campaign task's chain params, and the
// preset above against the foundation's meta.json when that exists already (`campaign plan`
// reads no input: a foundation not pretrained yet passes here; `init` and the commands that
// start tasks refuse it through checkChainTaskInputs).
void checkChainTaskParams(const nlohmann::json& params);

// Registers the task kind "chain" (jobs/task_kind.hpp): a task runs runChainTask on its
// campaign params and writes task_result.json beside the chain's outputs (`campaign repair`
// rebuilds a lost journal from those); its config is checked at `campaign init`, its input
// files at init and before every run, every value they hold once at init; the truth is read
// by the aggregation only. Registering again replaces it with the same.
void registerChainTaskKind();

// What a finished chain task leaves in its directory (weights.h5: N_mc x (2 iterations + 1)
// doubles, or N_mc with iteration_weights false; the histograms, history and records; the
// steps' models with keep_models), and what the aggregation of a chain campaign writes
// (event_weights.h5's columns, bands, figures): the chain kind's estimates for
// jobs/disk_estimate.hpp. nullopt when the simulation is not there yet.
std::optional<jobs::DiskUseEstimate> estimateChainTaskOutput(const nlohmann::json& task_params);
std::optional<jobs::DiskUseEstimate> estimateChainAggregateOutput(const jobs::CampaignSpec& spec);

// Drops the in-process caches (datasets, checkpoints, standardised PET inputs).
void clearChainTaskCache();
// How many standardised PET input sets (at most 6) and unfolding files (at most 4) the process
// keeps, the least recently used dropped first (tests).
size_t chainTaskCachedSets();
size_t chainTaskCachedDatasets();

}  // namespace foldfarm::ensembles
