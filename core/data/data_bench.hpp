#pragma once
// `foldfarm bench data`: throughput of the synthetic generator on the calling thread (one
// core) and of streaming a written file back through BatchStream. Figures as JSON:
//   synth_pretrain_jets_per_s, synth_unfold_events_per_s (gen + detector + observables),
//   write_jets_per_s (features -> chunked, compressed HDF5), stream_read_jets_per_s and
//   stream_read_MB_per_s (shuffled batches of 256, one rank, the compressed file as `data
//   synth` writes it), stream_read_uncompressed_jets_per_s (same rows, deflate off),
//   file_MB, jets, P.
// Every rate is also given per CPU second of the calling thread (*_per_cpu_s): on a shared,
// oversubscribed machine the wall-clock rate measures the neighbours as much as this code.
// The temporary file lives in `tmp_dir` and is removed afterwards.
#include <cstdint>
#include <string>

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

}  // namespace foldfarm::data
