// model info, pretrain, finetune, generate, device; bench pet, optim and mlp (their work in
// core/train/benchmarks.hpp).
#include <torch/torch.h>
#include <torch/version.h>
#include <algorithm>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "apps/foldfarm/commands.hpp"
#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/json_value.hpp"
#include "core/base/log.hpp"
#include "core/base/progress.hpp"
#include "core/base/seed.hpp"
#include "core/base/stop_signal.hpp"
#include "core/data/jet_files.hpp"
#include "core/data/jet_reader.hpp"
#include "core/data/synth.hpp"
#include "core/model/diffusion.hpp"
#include "core/model/pet.hpp"
#include "core/model/threads.hpp"
#include "core/train/benchmarks.hpp"
#include "core/train/checkpoint.hpp"
#include "core/train/classifier_trainer.hpp"
#include "core/train/device.hpp"
#include "core/train/finetune.hpp"
#include "core/train/flat_params.hpp"
#include "core/train/generate.hpp"
#include "core/train/gradient_step.hpp"
#include "core/train/losses.hpp"
#include "core/train/metrics.hpp"
#include "core/train/optim.hpp"
#include "core/train/parallel.hpp"
#include "core/train/pretrain.hpp"
#include "core/train/train_config.hpp"
#include "core/train/trainer.hpp"
#include "dist/cli_options.hpp"
#include "dist/launch.hpp"
#include "dist/make_context.hpp"
#include "dist/pretrain_command.hpp"

namespace foldfarm::app {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// ---- model info -----------------------------------------------------------------------

struct InfoArgs {
  std::string preset = "omnilearn", config;
  int classes = 1;
  bool generator = false, json_out = false;
};

void runInfo(const InfoArgs& a) {
  PetConfig cfg = petConfigFrom(a.preset, readTrainConfigFile(a.config));
  cfg.num_classes = a.classes;
  cfg.generator = a.generator;
  validatePetConfig(cfg, "--classes");
  if (a.classes > data::kMaxLabelClasses)  // no data foldfarm reads has more
    throw InputError("--classes " + std::to_string(a.classes) + ": at most " +
                     std::to_string(data::kMaxLabelClasses) +
                     " classes (labels of more are refused)");
  Pet m(cfg);
  const auto n = m->parameterCounts();
  json j = {{"preset", cfg.preset},
            {"config", petConfigToJson(cfg)},
            {"parameters",
             {{"body", n.body},
              {"classifier_head", n.classifier},
              {"generator_head", n.generator},
              {"total", n.total}}}};
  if (a.json_out) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf(
        "PET %s: body %lld, classifier head %lld, generator head %lld, total %lld parameters\n",
        cfg.preset.c_str(), static_cast<long long>(n.body), static_cast<long long>(n.classifier),
        static_cast<long long>(n.generator), static_cast<long long>(n.total));
  }
}

// ---- pretrain -------------------------------------------------------------------------

// The request as CLI11 fills it, with the data-parallel options it parses.
struct PretrainArgs : dist::PretrainRequest {
  dist::DistCli dist;  // --collective-timeout, --dist-backend, --bucket-cap-mb
};

void runPretrain(const PretrainArgs& a, const CLI::App& app) {
  dist::PretrainRequest r = a;
  r.given = givenOptionNames(app);
  r.dist_options = [&a] { return a.dist.resolve(); };
  dist::pretrainCommand(r);
}

// ---- finetune -------------------------------------------------------------------------

using FinetuneArgs = FinetuneRequest;

// A training stopped by a signal, its state saved: the command says how to continue (the
// trainer does not know which command runs it; a campaign task continues by itself).
template <class F>
void withResumeHint(F&& run) {
  try {
    run();
  } catch (const InterruptedError& e) {
    throw InterruptedError(std::string(e.what()) +
                           "; rerun the same command with --resume to continue");
  }
}

void runFinetune(const FinetuneArgs& a, const CLI::App& app) {
  FinetuneRequest r = a;
  r.given = givenOptionNames(app);
  finetuneCommand(r);
}

// ---- generate -------------------------------------------------------------------------

struct GenerateArgs : GenerateOptions {  // core/train/generate.hpp
  std::string out;
  int threads = 0;
};

// An --out inside the checkpoint that is read (its meta.json, its model/): refused even with
// --overwrite, which would replace a file of the checkpoint and leave it unreadable.
void refuseOutInsideCheckpoint(const std::string& out, const std::string& checkpoint) {
  std::error_code ec;
  fs::path ckpt = fs::weakly_canonical(checkpoint, ec);
  if (ec) return;
  if (ckpt.filename() == "meta.json") ckpt = ckpt.parent_path();
  const fs::path where = fs::weakly_canonical(fs::absolute(out), ec);
  if (ec) return;
  for (fs::path p = where; !p.empty() && p != p.root_path(); p = p.parent_path())
    if (p == ckpt)
      throw InputError(out + ": lies inside the checkpoint --ckpt " + checkpoint +
                       " reads, and would replace a file of it; choose an --out outside it");
}

void runGenerate(const GenerateArgs& a) {
  // One process samples into one file: under mpirun/srun every rank would write --out.
  const dist::LaunchInfo launch = dist::detectLaunch();
  checkAlikeOnEveryRank(launch.rank, [&] {
    if (launch.world_size > 1)
      throw InputError("generate samples on one process, not on " +
                       std::to_string(launch.world_size) + " ranks (every rank would write " +
                       a.out + "): run it without mpirun/srun, or with one task");
  });
  configureThreads(a.threads);
  generateJetFile(a, a.out);
  std::printf("%s\n",
              json{{"out", a.out}, {"jets", a.jets}, {"class", a.class_index}}.dump().c_str());
}

// ---- bench pet, optim, mlp (core/train/benchmarks.hpp) ----------------------------------

struct BenchArgs : PetBenchOptions {
  bool json_out = false;
};
struct OptimBenchArgs : OptimBenchOptions {
  bool json_out = false;
};
struct MlpBenchArgs : MlpBenchOptions {
  bool json_out = false;
};

void runBench(const BenchArgs& a) {
  const json j = benchPet(
      a, a.json_out ? std::function<void(const std::string&)>()
                    : [](const std::string& l) { std::printf("%s\n", l.c_str()); });
  if (a.json_out) std::printf("%s\n", j.dump(2).c_str());
}

void runOptimBench(const OptimBenchArgs& a) {
  const json j = benchOptim(a);
  const bool same = j.at("bit_identical").get<bool>();
  if (a.json_out) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf(
        "%s %s on %s, %lld parameters in %zu tensors: per-parameter %.3f ms, flat %.3f "
        "ms per step (x%.2f), %s\n",
        a.preset.c_str(), a.kind.c_str(), j.at("device").at("device").get<std::string>().c_str(),
        static_cast<long long>(j.at("parameters").get<int64_t>()), j.at("tensors").get<size_t>(),
        j.at("per_parameter_step_ms").get<double>(), j.at("flat_step_ms").get<double>(),
        j.at("speedup").get<double>(), same ? "bit-identical" : "DIFFERENT");
  }
  if (!same) throw Error("bench optim: the flat and per-parameter optimisers ended differently");
}

void runMlpBench(const MlpBenchArgs& a) {
  const json j = benchMlp(a);
  if (a.json_out) {
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  const json& fit = j.at("fit");
  std::string line =
      fmt::format("bench mlp on {}: {} rows, batch {}, {:.3f} s per epoch ({:.1f} ms per step)",
                  j.at("device").at("device").get<std::string>(), a.rows, a.batch,
                  fit.at("epoch_s").get<double>(), fit.at("step_ms").get<double>());
  if (j.contains("cpu"))
    line +=
        fmt::format("; CPU {:.3f} s per epoch: x{:.2f} (largest logit difference {:.2g})",
                    j.at("cpu").at("epoch_s").get<double>(), j.at("speedup_vs_cpu").get<double>(),
                    j.at("max_logit_difference").get<double>());
  if (j.contains("compare_note")) line += "; --compare: " + j.at("compare_note").get<std::string>();
  std::printf("%s\n", line.c_str());
}

// --save-every: the training state within an epoch, so that a process killed outright (a
// lost node, the OOM killer, a Slurm job past its grace time) loses at most that much.
void addSaveEveryOption(CLI::App& app, double& minutes) {
  app.add_option("--save-every", minutes,
                 "Minutes between saves of <out>/state within an epoch (also saved at every "
                 "epoch's end and on a stop; a kill -9 loses at most this much; 0: those only)")
      ->check(CLI::Range(0.0, 1e7))
      ->capture_default_str();
}

// `pretrain`'s options on `parent`, bound to `pre` (no callback): the command itself, and
// `slurm render pretrain`'s check of the arguments it puts in a batch script.
CLI::App* addPretrainCommand(CLI::App& parent, PretrainArgs& pre) {
  CLI::App* p = parent.add_subcommand(
      "pretrain", "Pretrain PET (classification + diffusion + noised classification)");
  p->add_option("--data", pre.data,
                "Jets HDF5 files with pid labels: paths, glob patterns ('train_*.h5') or @LIST "
                "(a text file of paths), comma-separated; all must share the layout")
      ->required();
  p->add_option("--out", pre.out, "Output directory (state/ while training, model/ at the end)")
      ->required();
  p->add_option("--config", pre.config,
                "JSON with \"model\" (size overrides) and \"train\" (lr, epochs, ...; the "
                "options given here win)");
  p->add_option("--preset", pre.preset, "omnilearn or tiny")->capture_default_str();
  p->add_option("--epochs", pre.epochs, "Epochs")->capture_default_str();
  p->add_option("--batch", pre.batch, "Batch size per rank")->capture_default_str();
  p->add_option("--lr", pre.lr, "Head learning rate after warm-up (x sqrt(ranks))")
      ->capture_default_str();
  p->add_option("--lr-factor", pre.lr_factor, "Body learns at lr / lr_factor")
      ->capture_default_str();
  p->add_option("--optimizer", pre.optimizer, "lion or adamw")->capture_default_str();
  p->add_option("--warmup-epochs", pre.warmup_epochs, "Linear warm-up epochs")
      ->capture_default_str();
  p->add_option("--val-fraction", pre.val_fraction,
                "Validation fraction: in memory, of the jets the test split leaves; with "
                "--stream, of all jets (whole blocks)")
      ->capture_default_str();
  p->add_option("--test-fraction", pre.test_fraction, "Held-out test fraction of all jets")
      ->capture_default_str();
  p->add_option("--max-jets", pre.max_jets, "Read at most this many jets (0: all)")
      ->capture_default_str();
  p->add_option("--seed", pre.seed, "Seed of initialisation, splits, data order and noise")
      ->capture_default_str();
  p->add_option("--threads", pre.threads, "Threads (0: all cores)")->capture_default_str();
  p->add_flag("--resume", pre.resume, "Continue from <out>/state");
  addSaveEveryOption(*p, pre.save_every_min);
  p->add_flag("--shard-data", pre.shard_data,
              "Each rank reads and holds only its 1/N of the jets and shuffles them per epoch "
              "(memory per rank / N; resumes on any number of ranks, the rows dealt anew)");
  CLI::Option* stream_flag =
      p->add_flag("--stream", pre.stream,
                  "Stream the training jets from the files instead of holding them: memory per "
                  "rank is the shuffle buffer and the read-ahead; whole blocks are held out for "
                  "validation and test; resumes exactly, on any number of ranks");
  p->add_option("--block-rows", pre.block_rows,
                "--stream: rows per block (the unit of shuffling, "
                "dealing and hold-out)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24))
      ->needs(stream_flag)
      ->capture_default_str();
  p->add_option("--shuffle-buffer", pre.shuffle_buffer, "--stream: jets in the shuffle buffer")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 26))
      ->needs(stream_flag)
      ->capture_default_str();
  p->add_option("--readers", pre.readers, "--stream: reader threads per rank")
      ->check(CLI::Range(1, 256))
      ->needs(stream_flag)
      ->capture_default_str();
  p->add_option("--read-ahead", pre.read_ahead, "--stream: blocks read ahead per rank")
      ->check(CLI::Range(1, 4096))
      ->needs(stream_flag)
      ->capture_default_str();
  p->add_option("--eval-jets", pre.eval_jets,
                "--stream: at most this many held-out jets each for validation and test (0: all)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40))
      ->needs(stream_flag)
      ->capture_default_str();
  pre.dist.addTo(*p);
  addDeviceOptions(*p, pre.device, &pre.precision, &pre.fixed_shapes, &pre.cuda_graphs);
  return p;
}

}  // namespace

void checkArgumentsParse(CLI::App& app, const std::string& name, std::vector<std::string> args,
                         const std::string& who, const std::string& full) {
  args.insert(args.begin(), name);
  std::reverse(args.begin(), args.end());  // CLI11 parses a vector from its back
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    throw InputError(who + ": the arguments are not those of `foldfarm " + full + "`: " + e.what() +
                     " (see `foldfarm " + full + " --help`)");
  }
}

void checkPretrainArguments(const std::vector<std::string>& args, const std::string& who) {
  CLI::App app{"check"};
  PretrainArgs unused;
  addPretrainCommand(app, unused);
  checkArgumentsParse(app, "pretrain", args, who, "pretrain");
}

void registerModelCommands(CommandGroups& g) {
  auto info = std::make_shared<InfoArgs>();
  CLI::App* model = g.root.add_subcommand("model", "PET model: sizes and parameter counts");
  model->require_subcommand(1);
  CLI::App* i =
      model->add_subcommand("info", "Parameter counts per component (body, heads, total)");
  i->add_option("--preset", info->preset, "omnilearn or tiny")->capture_default_str();
  i->add_option("--config", info->config, "JSON file whose \"model\" object overrides sizes");
  i->add_option("--classes", info->classes, "Classifier outputs (1 = one logit)")
      ->capture_default_str();
  i->add_flag("--generator", info->generator, "Include the diffusion generator head");
  i->add_flag("--json", info->json_out, "Print JSON");
  i->callback([info] { runInfo(*info); });

  auto pre = std::make_shared<PretrainArgs>();
  CLI::App* p = addPretrainCommand(g.root, *pre);
  p->callback([pre, p] { withResumeHint([&] { runPretrain(*pre, *p); }); });

  auto ft = std::make_shared<FinetuneArgs>();
  CLI::App* f = g.root.add_subcommand(
      "finetune", "Train a one-logit PET classifier, from a checkpoint or from scratch");
  f->add_option("--init", ft->init,
                "Checkpoint to warm-start from (a checkpoint directory or the output directory "
                "of `foldfarm pretrain`), or none")
      ->capture_default_str();
  f->add_option("--preset", ft->preset, "Preset when --init none")->capture_default_str();
  f->add_option("--config", ft->config,
                "JSON with \"model\" (size overrides, --init none) and \"train\" (lr, epochs, "
                "...; the options given here win)");
  f->add_option("--train", ft->train, "Jets HDF5 file with 0/1 pid labels")->required();
  f->add_option("--out", ft->out, "Output directory (model/, state/)")->required();
  f->add_option("--val-fraction", ft->val_fraction, "Validation fraction of the training part")
      ->capture_default_str();
  f->add_option("--test-fraction", ft->test_fraction, "Held-out test fraction")
      ->capture_default_str();
  f->add_option("--epochs", ft->epochs, "Maximum epochs")->capture_default_str();
  f->add_option("--patience", ft->patience, "Early-stopping patience (0: off)")
      ->capture_default_str();
  f->add_option("--batch", ft->batch, "Batch size")->capture_default_str();
  f->add_option("--lr", ft->lr, "Head learning rate")->capture_default_str();
  f->add_option("--lr-factor", ft->lr_factor, "Body learns at lr / lr_factor")
      ->capture_default_str();
  f->add_option("--optimizer", ft->optimizer, "lion or adamw")->capture_default_str();
  f->add_option("--warmup-epochs", ft->warmup_epochs, "Linear warm-up epochs (fractional allowed)")
      ->capture_default_str();
  f->add_option("--seed", ft->seed, "Seed")->capture_default_str();
  f->add_option("--threads", ft->threads, "Threads (0: all cores)")->capture_default_str();
  f->add_flag("--resume", ft->resume, "Continue from <out>/state");
  addSaveEveryOption(*f, ft->save_every_min);
  f->add_flag("--json", ft->json, "Print JSON");
  addDeviceOptions(*f, ft->device, &ft->precision, &ft->fixed_shapes, &ft->cuda_graphs);
  f->callback([ft, f] { withResumeHint([&] { runFinetune(*ft, *f); }); });

  auto gen = std::make_shared<GenerateArgs>();
  CLI::App* ge = g.root.add_subcommand(
      "generate", "Sample jets of one class with the diffusion head (EMA weights)");
  ge->add_option("--ckpt", gen->checkpoint,
                 "Pretrained checkpoint (a checkpoint directory or the output directory of "
                 "`foldfarm pretrain`)")
      ->required();
  ge->add_option("--class", gen->class_index, "Class index")->required();
  ge->add_option("--jets", gen->jets, "Number of jets")->required();
  ge->add_option("--out", gen->out, "Output HDF5 (jets layout, written atomically)")->required();
  ge->add_option("--steps", gen->steps, "Second-order sampler steps (1 to 100000)")
      ->capture_default_str();
  ge->add_option("--seed", gen->seed, "Seed")->capture_default_str();
  ge->add_option("--threads", gen->threads, "Threads (0: all cores)")->capture_default_str();
  addDeviceOptions(*ge, gen->device, nullptr, nullptr);
  const auto gen_overwrite = addOverwriteFlag(*ge);
  ge->callback([gen, gen_overwrite] {
    refuseOutInsideCheckpoint(gen->out, gen->checkpoint);
    refuseExistingOut(gen->out, *gen_overwrite);
    runGenerate(*gen);
  });

  // device: what --device resolves to in this process (a campaign slot's GPU, a rank's).
  auto dev = std::make_shared<std::pair<std::string, bool>>("auto", false);
  CLI::App* d = g.root.add_subcommand(
      "device",
      "Which device --device resolves to here (LibTorch's CUDA, visible GPUs, local rank, "
      "CUDA_VISIBLE_DEVICES) and why");
  d->add_option("--device", dev->first, "cpu, cuda (or gpu) or auto")
      ->check(CLI::IsMember(kDeviceNames))
      ->capture_default_str();
  d->add_flag("--json", dev->second, "Print JSON");
  d->callback([dev] {
    const DeviceFacts f = probeDeviceFacts();
    const DeviceChoice c = resolveDevice(parseDeviceRequest(dev->first, "--device"), f);
    const char* slot = std::getenv("FOLDFARM_SLOT");
    json j = {{"torch_cuda", f.torch_cuda},
              {"visible_gpus", f.visible_gpus},
              {"local_rank", f.local_rank},
              {"cuda_visible_devices", f.cvd_set ? json(f.cuda_visible_devices) : json()},
              {"slot", slot != nullptr ? json(slot) : json()},
              {"choice", c.toJson()}};
    if (dev->second) {
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("%s\n", c.describe().c_str());
    }
  });

  auto bench = std::make_shared<BenchArgs>();
  CLI::App* b = g.bench.add_subcommand(
      "pet", "PET training-step throughput (forward + backward + optimiser)");
  b->add_option("--preset", bench->preset, "omnilearn or tiny")->capture_default_str();
  b->add_option("--mode", bench->mode, "classifier or pretrain")->capture_default_str();
  b->add_option("--batch", bench->batch, "Batch size")->capture_default_str();
  b->add_option("--batches", bench->batches,
                "Several batch sizes, one after the other in this process (e.g. 256,1024,4096)")
      ->delimiter(',');
  b->add_option("--members", bench->members,
                "Models trained side by side in this process, each from its own thread (and "
                "stream on a GPU); several counts run one after the other (e.g. 1,2,4), with "
                "the total jets/s against the first")
      ->delimiter(',')
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  b->add_option("--device", bench->device, "cpu, cuda (or gpu) or auto")
      ->check(CLI::IsMember(kDeviceNames))
      ->capture_default_str();
  b->add_option("--precision", bench->precision,
                "fp32, or bf16 (autocast on the GPU; the baseline stays fp32)")
      ->capture_default_str();
  b->add_option("--attention", bench->attention,
                "The optimised path's attention: auto (SDPA on a GPU, per-jet trimmed products "
                "on the CPU), sdpa (LibTorch 2.x's fused kernel, any device) or padded")
      ->capture_default_str();
  b->add_flag("--fixed-shapes", bench->fixed_shapes,
              "Pad each batch to the batch size and its width to the next bucket edge");
  b->add_flag("--cuda-graphs", bench->cuda_graphs,
              "Replay each batch shape's forward and backward from a CUDA graph (GPU; implies "
              "--fixed-shapes; the baseline stays eager)");
  b->add_option("--peak-tflops", bench->peak_tflops,
                "Peak of the fraction reported (default: 989 on a GPU, the measured sgemm on "
                "the CPU)");
  b->add_option("--max-jets", bench->max_jets, "Jets read from --data")->capture_default_str();
  b->add_option("--threads", bench->threads, "Threads")->capture_default_str();
  b->add_option("--data", bench->data, "Jets HDF5 file")->required();
  b->add_option("--steps", bench->steps, "Timed steps")->capture_default_str();
  b->add_option("--warmup", bench->warmup, "Untimed warm-up steps")->capture_default_str();
  b->add_flag("--baseline", bench->baseline, "Padded to P, naive (gather + concat) edge layers");
  b->add_flag("--compare", bench->compare,
              "Also run the other path in the same process and report the speed-up");
  b->add_flag("--json", bench->json_out, "Print JSON");
  b->add_flag("--profile", bench->profile,
              "Print the per-operator self time of the timed steps to stderr (slows them down)");
  b->callback([bench] { runBench(*bench); });

  auto mb = std::make_shared<MlpBenchArgs>();
  CLI::App* m = g.bench.add_subcommand(
      "mlp",
      "Fit of the observable MLP (mlp and pet+mlp chains) on a device; --compare: the same fit "
      "on the CPU in the same run (does the MLP pay on the task's GPU?)");
  m->add_option("--device", mb->device, "cpu, cuda (or gpu) or auto")
      ->check(CLI::IsMember(kDeviceNames))
      ->capture_default_str();
  m->add_option("--rows", mb->rows, "Training rows (a chain step: MC + data events)")
      ->capture_default_str();
  m->add_option("--columns", mb->columns, "Input observables")->capture_default_str();
  m->add_option("--hidden", mb->hidden, "Hidden layer widths")
      ->delimiter(',')
      ->default_str(commaList(mb->hidden));
  m->add_option("--batch", mb->batch, "Batch size")->capture_default_str();
  m->add_option("--epochs", mb->epochs, "Timed epochs (after one untimed)")->capture_default_str();
  m->add_option("--threads", mb->threads, "Intra-op threads (0: all cores)")->capture_default_str();
  m->add_flag("--compare", mb->compare, "Also fit on the CPU and report the speed-up");
  m->add_flag("--json", mb->json_out, "Print JSON");
  m->callback([mb] { runMlpBench(*mb); });

  auto ob = std::make_shared<OptimBenchArgs>();
  CLI::App* o = g.bench.add_subcommand(
      "optim",
      "Optimiser + EMA step: per-parameter tensors against flat buffers (same gradients; "
      "checks that both end bit-identical)");
  o->add_option("--preset", ob->preset, "omnilearn or tiny")->capture_default_str();
  o->add_option("--kind", ob->kind, "lion or adamw")
      ->check(CLI::IsMember({"lion", "adamw"}))
      ->capture_default_str();
  o->add_option("--device", ob->device, "cpu, cuda (or gpu) or auto")
      ->check(CLI::IsMember(kDeviceNames))
      ->capture_default_str();
  o->add_option("--steps", ob->steps, "Timed steps")->capture_default_str();
  o->add_option("--warmup", ob->warmup, "Untimed steps first")->capture_default_str();
  o->add_option("--threads", ob->threads, "Threads")->capture_default_str();
  o->add_flag("--json", ob->json_out, "Print JSON");
  o->callback([ob] { runOptimBench(*ob); });
}

}  // namespace foldfarm::app
