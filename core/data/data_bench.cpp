#include "core/data/data_bench.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <tuple>

#include "core/base/atomic_file.hpp"
#include "core/base/clock.hpp"
#include "core/base/error.hpp"
#include "core/base/process.hpp"
#include "core/base/sha256.hpp"
#include "core/data/jet_reader.hpp"
#include "core/data/jet_stream.hpp"
#include "core/data/jet_writer.hpp"
#include "core/data/synth.hpp"

namespace foldfarm::data {
namespace {

using Clock = std::chrono::steady_clock;

// CPU seconds of the calling thread: on a shared, oversubscribed machine wall-clock rates
// measure the neighbours; per-CPU-second rates measure this code.
double threadCpu() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

}  // namespace

nlohmann::json benchData(const DataBenchOptions& opt) {
  if (opt.jets < 256) throw InputError("bench data: --jets must be >= 256");
  if (opt.P < 1 || opt.batch_size < 1 || opt.read_epochs < 1)
    throw InputError("bench data: needs --particles, --batch-size and --epochs >= 1");
  SynthConfig cfg = SynthConfig::pretrainDefaults();
  cfg.P = opt.P;
  nlohmann::json r;
  r["jets"] = opt.jets;
  r["P"] = opt.P;
  r["threads"] = 1;
  r["host"] = hostName();

  auto t0 = Clock::now();
  double c0 = threadCpu();
  const JetArrays jets = synthPretrain(cfg, 1, 0, opt.jets);
  r["synth_pretrain_jets_per_s"] = opt.jets / secondsSince(t0);
  r["synth_pretrain_jets_per_cpu_s"] = opt.jets / (threadCpu() - c0);

  const int64_t events = std::max<int64_t>(256, opt.jets / 4);
  t0 = Clock::now();
  c0 = threadCpu();
  const UnfoldArrays u = synthUnfold(SynthConfig::unfoldDefaults(), 1, 0, events);
  r["synth_unfold_events_per_s"] = events / secondsSince(t0);
  r["synth_unfold_events_per_cpu_s"] = events / (threadCpu() - c0);
  r["unfold_events"] = events;

  const std::filesystem::path dir = opt.tmp_dir.empty() ? std::filesystem::temp_directory_path()
                                                        : std::filesystem::path(opt.tmp_dir);
  const std::string path =
      (dir / ("foldfarm_bench_data_" + std::to_string(::getpid()) + ".h5")).string();
  struct Cleanup {
    std::string p;
    ~Cleanup() {
      std::error_code ec;  // never throws from a destructor (std::terminate)
      std::filesystem::remove(p, ec);
    }
  };
  Cleanup cleanup{path};
  t0 = Clock::now();
  writeJetFile(path, jets);
  r["write_jets_per_s"] = opt.jets / secondsSince(t0);
  const double file_mb = std::filesystem::file_size(path) / 1e6;
  r["file_MB"] = file_mb;

  auto stream = [&](const std::string& file) {
    StreamOptions so;
    so.batch_size = opt.batch_size;
    so.seed = 3;
    BatchStream s({file}, so);
    int64_t rows = 0;
    JetArrays batch;
    const auto t = Clock::now();
    const double c = threadCpu();
    for (int e = 0; e < opt.read_epochs; ++e) {
      s.startEpoch(e);
      while (s.next(batch)) rows += batch.n;
    }
    return std::tuple<int64_t, double, double>(rows, secondsSince(t), threadCpu() - c);
  };
  const auto [rows, dt, dcpu] = stream(path);
  r["stream_read_jets_per_s"] = rows / dt;
  r["stream_read_jets_per_cpu_s"] = rows / dcpu;
  r["stream_read_MB_per_s"] = rows * opt.P * kNumParticleFeatures * 4.0 / dt / 1e6;
  r["stream_batch_size"] = opt.batch_size;

  const std::string raw = path + ".raw.h5";
  Cleanup cleanup_raw{raw};
  WriteOptions plain;
  plain.deflate_level = 0;
  plain.shuffle = false;
  writeJetFile(raw, jets, nlohmann::json::object(), plain);
  const auto [rows_raw, dt_raw, dcpu_raw] = stream(raw);
  r["stream_read_uncompressed_jets_per_s"] = rows_raw / dt_raw;
  r["stream_read_uncompressed_jets_per_cpu_s"] = rows_raw / dcpu_raw;
  r["file_uncompressed_MB"] = std::filesystem::file_size(raw) / 1e6;

  // SHA-256 of the uncompressed file's bytes (in memory, the file read once), as `campaign
  // init` records its inputs and the aggregation its simulation: the code this CPU runs
  // fastest beside the portable code, best of three each; the same digest or an error.
  const std::string bytes = readFile(raw);
  std::string digest[2];
  for (const Sha256::Code code : {Sha256::Code::kFastest, Sha256::Code::kPortable}) {
    double best = 0;
    for (int k = 0; k < 3; ++k) {
      const double c = threadCpu();
      Sha256 s(code);
      s.update(bytes);
      digest[code == Sha256::Code::kPortable] = s.hexDigest();
      const double dcpu_hash = threadCpu() - c;
      best = std::max(best, bytes.size() / 1e6 / dcpu_hash);
    }
    r[code == Sha256::Code::kPortable ? "sha256_portable_MB_per_cpu_s" : "sha256_MB_per_cpu_s"] =
        best;
  }
  if (digest[0] != digest[1])
    throw Error("bench data: the SHA-256 codes disagree on " + raw + " (" + digest[0] + " vs " +
                digest[1] + ")");
  r["sha256_code"] = sha256Implementation();
  r["sha256_speedup"] =
      r["sha256_MB_per_cpu_s"].get<double>() / r["sha256_portable_MB_per_cpu_s"].get<double>();
  (void)u;
  return r;
}

nlohmann::json benchStream(const StreamBenchOptions& opt) {
  if (opt.files.empty()) throw InputError("bench data --stream: give the files with --data");
  nlohmann::json r;
  r["host"] = hostName();
  r["files"] = opt.files.size();
  std::vector<int64_t> rows;
  double bytes = 0;
  for (const auto& f : opt.files) {
    const JetFile jf(f);
    rows.push_back(jf.numJets());
    bytes += static_cast<double>(std::filesystem::file_size(f));
    if (rows.size() == 1) {
      r["P"] = jf.numParticles();
      r["data_storage"] = datasetStorageText(f, "data");
    }
  }
  int64_t total = 0;
  for (int64_t n : rows) total += n;
  r["jets"] = total;
  r["files_MB"] = bytes / 1e6;
  r["batch_size"] = opt.batch_size;
  r["buffer_jets"] = opt.buffer_jets;
  r["block_rows"] = opt.block_rows;
  const auto blocks = cutStreamBlocks(rows, opt.block_rows);
  nlohmann::json runs = nlohmann::json::array();
  for (int readers : opt.readers) {
    JetStreamOptions so;
    so.batch_size = opt.batch_size;
    so.buffer_jets = opt.buffer_jets;
    so.readers = readers;
    so.read_ahead = opt.read_ahead;
    so.seed = 1;
    JetStream s(opt.files, blocks, so);
    const auto t0 = Clock::now();
    const int64_t steps = s.startEpoch(0, {}, 1, 0);
    int64_t jets = 0;
    for (int64_t k = 0; k < steps && (opt.max_jets <= 0 || jets < opt.max_jets); ++k)
      jets += s.next().n;
    const double dt = secondsSince(t0);
    const double P = r["P"].get<double>();
    runs.push_back({{"readers", readers},
                    {"jets", jets},
                    {"seconds", dt},
                    {"jets_per_s", jets / dt},
                    {"jets_per_s_per_reader", jets / dt / readers},
                    {"MB_per_s", jets * P * kNumParticleFeatures * 4.0 / dt / 1e6},
                    {"trainer_wait_s", s.waitSeconds()},
                    {"stream_memory_MB", s.memoryBytes() / 1e6},
                    {"peak_rss_MB", peakRssMB()}});
  }
  r["runs"] = runs;
  return r;
}

}  // namespace foldfarm::data
