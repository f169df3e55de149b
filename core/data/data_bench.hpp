#pragma once
// `foldfarm bench data`: throughput of the synthetic generator on the calling thread (one
// core) and of streaming a written file back through BatchStream. Figures as JSON:
//   synth_pretrain_jets_per_s, synth_unfold_events_per_s (gen + detector + observables),
//   write_jets_per_s (features -> chunked, compressed HDF5), stream_read_jets_per_s and
//   stream_read_MB_per_s (shuffled batches of 256, one rank, the compressed file as `data
//   synth` writes it), stream_read_uncompressed_jets_per_s (same rows, deflate off),
//   file_MB, jets, P; sha256_MB_per_cpu_s and sha256_portable_MB_per_cpu_s (SHA-256 of the
//   uncompressed file in memory, as campaign init checksums its inputs: the code this CPU
//   runs fastest, sha256_code "sha-ni" or "portable", beside the portable code; their ratio
//   sha256_speedup).
// Every rate is also given per CPU second of the calling thread (*_per_cpu_s): on a shared,
// oversubscribed machine the wall-clock rate measures the neighbours as much as this code.
// The temporary file lives in `tmp_dir` and is removed afterwards.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace foldfarm::data {

struct DataBenchOptions {
  int64_t jets = 20000;
  int64_t P = 128;
  int64_t batch_size = 256;
  int read_epochs = 2;
  std::string tmp_dir;  // "" = the system temporary directory
};

nlohmann::json benchData(const DataBenchOptions& opt);

// `foldfarm bench data --stream --data FILES`: what JetStream (core/data/jet_stream.hpp)
// delivers to a trainer from the given files, one epoch on one rank (or the first
// `max_jets`), for each reader-thread count. Per count: jets_per_s (total), jets_per_s_per_reader,
// MB_per_s (decoded particle features), trainer_wait_s (time next() waited for data), and
// peak_rss_MB of the process so far. Also the files' size on disk and their filters.
struct StreamBenchOptions {
  std::vector<std::string> files;
  std::vector<int> readers{1, 2, 4};
  int64_t batch_size = 256;
  int64_t buffer_jets = 16384;
  int64_t block_rows = 1024;
  int read_ahead = 8;
  int64_t max_jets = 0;  // 0: one whole epoch
};

nlohmann::json benchStream(const StreamBenchOptions& opt);

}  // namespace foldfarm::data
