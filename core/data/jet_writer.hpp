#pragma once
// Writing OmniLearn HDF5 files (the layout of OmniLearn's preprocessing scripts): chunked,
// shuffle + deflate compressed, atomic.
// The file is written under AtomicFile::tempPath() and only renamed over `path` by
// commit(); destroying a writer without commit() removes the temporary file and leaves
// any existing `path` untouched. Rows may be appended in any number of calls (datasets
// grow), so generators never hold a whole file in memory.
//
// Attributes: `attrs` is a JSON object written as root attributes: strings as strings,
// integers as int64, floats as double, anything else (objects, arrays) as its JSON text
// (e.g. "feature_stats"). Layout attribute "layout" = "jets" | "unfold" is always written.
// Thread-safety: one writer per thread. Errors: Error (I/O), std::invalid_argument for
// arrays of the wrong shape.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/data/jet_arrays.hpp"
#include "core/data/jet_reader.hpp"

namespace foldfarm::data {

struct WriteOptions {
  int deflate_level = 1;  // 0 disables deflate; 1 compresses ~2x faster than 4 for ~5% more bytes
  bool shuffle = true;    // byte shuffle filter before deflate
  int64_t chunk_rows = 128;  // rows per chunk of every dataset
  bool with_subs = true;     // unfold layout: write reco_subs/gen_subs
  bool with_pass = true;     // unfold layout: write pass_reco/pass_gen
  bool with_weights = true;
};

class JetFileWriter {
 public:
  // Creates the temporary file; P particle slots per jet. For the jets layout `with_labels`
  // decides whether `pid` (N,) int64 is written.
  JetFileWriter(std::string path, FileLayout layout, int64_t P, bool with_labels,
                nlohmann::json attrs = nlohmann::json::object(), WriteOptions opts = {});
  ~JetFileWriter();
  JetFileWriter(JetFileWriter&&) noexcept;

  // Jets layout: appends rows (a.P must equal P; labels present iff with_labels; weights
  // written as `weights` when present in the first append and with_weights).
  void append(const JetArrays& a);
  // Unfold layout: appends events (subs/pass/weights written when present in every append).
  void append(const UnfoldArrays& u);
  // Writes a whole extra numeric dataset (rows x cols, cols = 0 for 1-D) at commit() time,
  // e.g. part_px copied by `data convert`.
  void addFloatDataset(const std::string& name, std::vector<float> values, int64_t rows,
                       int64_t cols);
  // Adds/overwrites a root attribute (same rules as `attrs`).
  void setAttribute(const std::string& name, const nlohmann::json& value);
  int64_t rowsWritten() const;
  // Closes HDF5, fsyncs, renames into place. Throws Error; the destination is untouched then.
  void commit();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A file of plain float datasets (e.g. `subs` (N,6) from `data observables`): each array is
// rows x cols (cols = 0: 1-D), chunked and compressed, written atomically.
struct NamedArray {
  std::string name;
  std::vector<float> values;
  int64_t rows = 0, cols = 0;
};
void writeArraysFile(const std::string& path, const std::vector<NamedArray>& arrays,
                     const nlohmann::json& attrs = nlohmann::json::object(),
                     WriteOptions opts = {});

// One-call forms.
void writeJetFile(const std::string& path, const JetArrays& a,
                  const nlohmann::json& attrs = nlohmann::json::object(), WriteOptions opts = {});
void writeUnfoldFile(const std::string& path, const UnfoldArrays& u,
                     const nlohmann::json& attrs = nlohmann::json::object(),
                     WriteOptions opts = {});

}  // namespace foldfarm::data
