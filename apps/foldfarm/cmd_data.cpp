// foldfarm data synth|inspect|convert|observables, foldfarm bench data. No LibTorch: both
// executables run them (foldfarm_cli).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "apps/foldfarm/commands.hpp"
#include "core/base/atomic_file.hpp"
#include "core/base/cli_checks.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/data/convert.hpp"
#include "core/data/data_bench.hpp"
#include "core/data/features.hpp"
#include "core/data/inspect.hpp"
#include "core/data/jet_files.hpp"
#include "core/data/jet_reader.hpp"
#include "core/data/jet_writer.hpp"
#include "core/data/observables_file.hpp"
#include "core/data/synth_file.hpp"

namespace foldfarm::app {
namespace {

using namespace foldfarm::data;

struct SynthArgs {
  std::string kind = "pretrain";
  std::string tune = "sim";
  int64_t count = 0;
  uint64_t seed = 0;
  std::string out;
  int threads = 1;
  int64_t particles = 0;
  double pt_min = 0, pt_max = 0;
  int deflate = 1;
  std::string detector;
  std::string levels = "both";
};

void runSynth(const SynthArgs& a) {
  SynthFileOptions o;
  if (a.kind == "pretrain") {
    o.kind = SynthKind::kPretrain;
    o.config = SynthConfig::pretrainDefaults();
    o.config.tune = parseTune(a.tune);
  } else if (a.kind == "unfold") {
    o.kind = SynthKind::kUnfold;
    o.config = SynthConfig::unfoldDefaults(parseTune(a.tune));
  } else {
    throw InputError("data synth: unknown --kind '" + a.kind + "'; use pretrain or unfold");
  }
  if (a.count <= 0)
    throw InputError("data synth: give a positive --jets (pretrain) or --events (unfold)");
  if (a.particles > 0) o.config.P = a.particles;
  if (a.pt_min > 0) o.config.pt_min = a.pt_min;
  if (a.pt_max > 0) o.config.pt_max = a.pt_max;
  if (!a.detector.empty()) {
    if (o.kind != SynthKind::kUnfold)
      throw InputError("data synth: --detector varies the detector of --kind unfold samples");
    o.config.detector = DetectorVariation::parse(a.detector);
  }
  o.levels = a.levels;
  o.count = a.count;
  o.seed = a.seed;
  o.out = a.out;
  o.threads = a.threads;
  o.deflate_level = a.deflate;
  writeSynthFile(o);
  logInfo("wrote {} ({} {} {}, seed {}{}{})", a.out, a.count,
          a.kind == "pretrain" ? "jets" : "events", a.tune, a.seed,
          a.detector.empty() ? std::string() : ", detector " + a.detector,
          a.levels == "both" ? std::string() : ", " + a.levels + " level only");
}

}  // namespace

std::shared_ptr<bool> addOverwriteFlag(CLI::App& cmd) {
  auto overwrite = std::make_shared<bool>(false);
  cmd.add_flag("--overwrite", *overwrite,
               "Replace the --out file when one is there (without it, an existing file is kept "
               "and the command refused)");
  return overwrite;
}

void refuseExistingOut(const std::string& out, bool overwrite) {
  std::error_code ec;
  if (overwrite || !std::filesystem::is_regular_file(out, ec)) return;
  throw InputError(out +
                   ": exists; a command does not replace a file it was not told to (it may be "
                   "another run's input): choose another --out, or pass --overwrite to "
                   "replace it");
}

void registerDataCommands(CommandGroups& g) {
  CLI::App* data =
      g.root.add_subcommand("data", "Jet datasets: synthesise, inspect, convert, observables");
  data->require_subcommand(1);

  auto synth = std::make_shared<SynthArgs>();
  CLI::App* s = data->add_subcommand("synth", "Generate a synthetic pretraining or unfolding file");
  s->add_option("--kind", synth->kind,
                "pretrain (six balanced classes) or unfold (gen + reco per event)")
      ->capture_default_str();
  s->add_option("--jets,--events", synth->count, "Number of jets (pretrain) or events (unfold)")
      ->required();
  s->add_option("--seed", synth->seed, "Generator seed (same seed -> identical file)")
      ->capture_default_str();
  s->add_option(
       "--tune", synth->tune,
       "sim, data or alt (differ in coupling and hadronisation; alt plays another generator)")
      ->capture_default_str();
  s->add_option("--out", synth->out, "Output HDF5 file (written atomically)")->required();
  s->add_option("--threads", synth->threads,
                "Generator threads, at most 4096 (output identical for any count)")
      ->capture_default_str();
  s->add_option("--particles", synth->particles,
                "Particle slots per jet (default 128 pretrain, 100 unfold)")
      ->check(cli::kPositive);
  s->add_option("--pt-min", synth->pt_min, "Minimum generated jet pT in GeV (1 to 100000)")
      ->check(cli::kPositive);
  s->add_option("--pt-max", synth->pt_max, "Maximum generated jet pT in GeV (1 to 100000)")
      ->check(cli::kPositive);
  s->add_option("--deflate", synth->deflate, "Deflate level 0-9 (0: uncompressed)")
      ->check(CLI::Range(0, 9))
      ->capture_default_str();
  s->add_option("--detector", synth->detector,
                "unfold: a detector variation, multipliers on the response "
                "(energy_scale=1.02,resolution=1.1,efficiency=0.98,angular=1.2); the generated "
                "events stay those of the same --seed without it");
  s->add_option("--levels", synth->levels,
                "unfold: both, reco (detector level only, as experimental data is: a data "
                "sample) or gen (particle level only: a truth sample); the events are those of "
                "both for the same --seed")
      ->check(CLI::IsMember({"both", "reco", "gen"}))
      ->capture_default_str();
  const auto synth_overwrite = addOverwriteFlag(*s);
  s->callback([synth, synth_overwrite] {
    refuseExistingOut(synth->out, *synth_overwrite);
    runSynth(*synth);
  });

  auto insp_file = std::make_shared<std::vector<std::string>>();
  auto insp_json = std::make_shared<bool>(false);
  CLI::App* i = data->add_subcommand(
      "inspect",
      "Datasets, shapes, label balance, multiplicity and jet summaries (of an observables file: "
      "its columns)");
  i->add_option("files", *insp_file,
                "HDF5 file, or a dataset of jets files: paths, glob patterns or @LIST, "
                "space- or comma-separated (each file is summarised; they must share the layout)")
      ->required()
      ->expected(1, -1);
  i->add_flag("--json", *insp_json, "Print JSON on stdout instead of a table");
  i->callback([insp_file, insp_json] {
    std::string given;
    for (const std::string& f : *insp_file) given += (given.empty() ? "" : ",") + f;
    const std::vector<std::string> files = expandDatasetFiles(given);
    if (files.size() == 1) {
      const auto summary = summarizeFile(files[0]);
      if (*insp_json) {
        std::cout << summary.dump(2) << std::endl;
      } else {
        std::cout << formatSummary(summary);
      }
      return;
    }
    countJetsInFiles(files);  // refuses the first file whose layout differs, by name
    nlohmann::json all = {{"files", nlohmann::json::array()}, {"jets", 0}};
    for (const auto& f : files) {
      nlohmann::json one = summarizeFile(f);
      all["jets"] = all["jets"].get<int64_t>() + one.value("jets", int64_t{0});
      all["files"].push_back(std::move(one));
    }
    if (*insp_json) {
      std::cout << all.dump(2) << std::endl;
      return;
    }
    for (const auto& one : all["files"]) std::cout << formatSummary(one) << "\n";
    std::cout << files.size() << " files, " << all["jets"].get<int64_t>()
              << " jets in all, one layout\n";
  });

  auto conv_in = std::make_shared<std::string>(), conv_out = std::make_shared<std::string>();
  auto conv_opts = std::make_shared<WriteOptions>();
  CLI::App* c = data->add_subcommand(
      "convert",
      "Write a jets file in foldfarm's layout: from four-vectors (part_px/py/pz/energy: `data` "
      "and `jet` recomputed, pid kept), or a jets-layout file repacked for streaming (chunks "
      "of whole rows, shuffle + deflate, decoded in parallel by `pretrain --stream`)");
  c->add_option("--in", *conv_in,
                "Input HDF5: with part_px, part_py, part_pz, part_energy (N,P), else a jets "
                "layout file (data/jet[/pid][/weights])")
      ->required();
  c->add_option("--out", *conv_out, "Output HDF5 (jets layout; written atomically)")->required();
  c->add_option("--deflate", conv_opts->deflate_level, "Deflate level 0-9 (0: none)")
      ->check(CLI::Range(0, 9))
      ->capture_default_str();
  c->add_option("--chunk-rows", conv_opts->chunk_rows, "Jets per chunk")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  const auto conv_overwrite = addOverwriteFlag(*c);
  c->callback([conv_in, conv_out, conv_opts, conv_overwrite] {
    refuseExistingOut(*conv_out, *conv_overwrite);
    if (fileHasDataset(*conv_in, "part_px"))
      convertFromFourVectors(*conv_in, *conv_out, *conv_opts);
    else
      repackJets(*conv_in, *conv_out, *conv_opts);
  });

  auto obs_in = std::make_shared<std::string>(), obs_out = std::make_shared<std::string>(),
       obs_level = std::make_shared<std::string>();
  CLI::App* o = data->add_subcommand(
      "observables",
      "Write `subs` (N,6) = [mass, width, multiplicity, ln rho, z_g, tau21], row for row as the "
      "input's jets (its event `weights` and pass flags are not copied: read them from the input "
      "file, same rows)");
  o->add_option("--in", *obs_in, "Input HDF5 (jets or unfold layout)")->required();
  o->add_option("--out", *obs_out, "Output HDF5 with dataset `subs`")->required();
  o->add_option("--level", *obs_level,
                "gen or reco (unfolding files; default gen, reco for a file of reco only)");
  const auto obs_overwrite = addOverwriteFlag(*o);
  o->callback([obs_in, obs_out, obs_level, obs_overwrite] {
    refuseExistingOut(*obs_out, *obs_overwrite);
    writeObservablesFile(*obs_in, *obs_out, *obs_level);
  });

  auto bench = std::make_shared<DataBenchOptions>();
  auto bench_json = std::make_shared<bool>(false);
  CLI::App* b =
      g.bench.add_subcommand("data", "Generator jets/s on one core and HDF5 streaming read jets/s");
  // The generator's options, which --stream (the files given) does not read: refused beside it
  // (before: taken and ignored).
  const std::vector<CLI::Option*> generated = {
      b->add_option("--jets", bench->jets,
                    "Jets to generate, write and stream back (at least 256; not with --stream)")
          ->capture_default_str(),
      b->add_option("--particles", bench->P, "Particle slots per jet (not with --stream)")
          ->capture_default_str(),
      b->add_option("--epochs", bench->read_epochs, "Streaming epochs (not with --stream)")
          ->capture_default_str(),
      b->add_option("--tmp-dir", bench->tmp_dir,
                    "Directory for the temporary file (not with --stream)")};
  b->add_option("--batch-size", bench->batch_size, "Streaming batch size")->capture_default_str();
  b->add_flag("--json", *bench_json, "Print the figures as JSON on stdout");
  auto sb = std::make_shared<StreamBenchOptions>();
  auto stream_flag = std::make_shared<bool>(false);
  auto stream_data = std::make_shared<std::string>();
  CLI::Option* stream_opt =
      b->add_flag("--stream", *stream_flag,
                  "Measure what `pretrain --stream` reads from --data instead: jets/s delivered "
                  "per reader-thread count (one epoch, one rank)");
  for (CLI::Option* opt : generated) stream_opt->excludes(opt);
  b->add_option("--data", *stream_data,
                "--stream: the files, as pretrain --data takes them (paths, globs, @LIST)")
      ->needs(stream_opt);
  b->add_option("--readers", sb->readers, "--stream: reader-thread counts to measure")
      ->delimiter(',')
      ->check(CLI::Range(1, 256))
      ->needs(stream_opt)
      ->default_str(commaList(sb->readers));
  b->add_option("--shuffle-buffer", sb->buffer_jets, "--stream: jets in the shuffle buffer")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 26))
      ->needs(stream_opt)
      ->capture_default_str();
  b->add_option("--block-rows", sb->block_rows, "--stream: rows per block")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24))
      ->needs(stream_opt)
      ->capture_default_str();
  b->add_option("--max-jets", sb->max_jets, "--stream: stop after this many jets (0: an epoch)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40))
      ->needs(stream_opt)
      ->capture_default_str();
  b->callback([bench, bench_json, sb, stream_flag, stream_data] {
    if (*stream_flag && stream_data->empty())
      throw InputError("bench data --stream: give the files with --data");
    if (*stream_flag) sb->batch_size = bench->batch_size;
    if (*stream_flag) sb->files = expandDatasetFiles(*stream_data);
    const auto r = *stream_flag ? benchStream(*sb) : benchData(*bench);
    if (*bench_json) {
      std::cout << r.dump(2) << std::endl;
    } else {
      for (auto& [k, v] : r.items()) std::cout << k << ": " << v.dump() << "\n";
    }
  });
}

}  // namespace foldfarm::app
