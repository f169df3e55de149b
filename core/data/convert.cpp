#include "core/data/convert.hpp"

#include <algorithm>
#include <vector>

#include <fmt/format.h>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/progress.hpp"
#include "core/data/features.hpp"
#include "core/data/h5_file.hpp"
#include "core/data/jet_reader.hpp"

namespace foldfarm::data {

void convertFromFourVectors(const std::string& in, const std::string& out,
                            const WriteOptions& options) {
  requireOutputDirectory(out);
  refuseOutputOverInput(out, in, "data convert");
  std::vector<int64_t> dims;
  const auto px = readFloatDataset(in, "part_px", &dims);
  if (dims.size() != 2)
    throw InputError(in +
                     ": dataset 'part_px': expected shape (N,P); fix the producer of this file");
  const int64_t n = dims[0], P = dims[1];
  const char* others[] = {"part_py", "part_pz", "part_energy"};
  std::vector<std::vector<float>> comp;
  for (const char* name : others) {
    std::vector<int64_t> d;
    comp.push_back(readFloatDataset(in, name, &d));
    if (d != dims)
      throw InputError(in + ": dataset '" + name +
                       "': shape differs from part_px; the file is inconsistent");
  }
  std::vector<int64_t> labels;
  if (fileHasDataset(in, "pid")) {
    labels = readClassLabels(in, "pid");  // one-hot -> indices, each checked
    if (static_cast<int64_t>(labels.size()) != n)
      throw InputError(in + ": dataset 'pid': has " + std::to_string(labels.size()) +
                       " rows, part_px has " + std::to_string(n) + "; the file is inconsistent");
  }
  JetArrays a = JetArrays::zeros(n, P, !labels.empty());
  a.labels = labels;
  Progress progress("convert", n, "jets");
  std::vector<Particle> parts;
  for (int64_t i = 0; i < n; ++i) {
    parts.clear();
    for (int64_t j = 0; j < P; ++j) {
      const size_t k = static_cast<size_t>(i * P + j);
      if (comp[2][k] == 0 && px[k] == 0 && comp[0][k] == 0) continue;  // padding
      // A particle's energy is at least its transverse momentum: E <= 0 beside a momentum
      // is no particle (it would enter the features as log E = -69 without a word).
      if (!(comp[2][k] > 0))
        throw InputError(in + ": jet row " + std::to_string(i) + ", particle " + std::to_string(j) +
                         ": part_energy " + fmt::format("{}", comp[2][k]) +
                         " <= 0 beside a non-zero momentum; fix the producer of this file "
                         "(padding slots are all zero)");
      Particle p;
      p.p = {px[k], comp[0][k], comp[1][k], comp[2][k]};
      parts.push_back(p);
    }
    fillJetFeatures(parts, P, a.particle(i, 0), a.jet(i));
    if ((i & 1023) == 0) progress.update(i);
  }
  progress.update(n);
  progress.finish();
  // The input's own attributes (its provenance, what its labels mean) are kept.
  nlohmann::json attrs = nlohmann::json::object();
  {
    const H5Handle f = h5OpenRead(in);
    for (const std::string& name : h5AttrNames(f.get()))
      attrs[name] = h5ReadAttrAsString(f.get(), name);
  }
  attrs["converted_from_file"] = in;
  attrs["converted_from"] = "part_px, part_py, part_pz, part_energy";
  JetFileWriter w(out, FileLayout::kJets, P, !labels.empty(), attrs, options);
  w.append(a);
  w.addFloatDataset("part_px", px, n, P);
  w.addFloatDataset("part_py", std::move(comp[0]), n, P);
  w.addFloatDataset("part_pz", std::move(comp[1]), n, P);
  w.addFloatDataset("part_energy", std::move(comp[2]), n, P);
  w.commit();
  logInfo("wrote {} ({} jets, P={})", out, n, P);
}

void repackJets(const std::string& in, const std::string& out, const WriteOptions& options) {
  requireOutputDirectory(out);
  refuseOutputOverInput(out, in, "data convert");
  const JetFile f(in);
  if (f.layout() != FileLayout::kJets)
    throw InputError(in + ": is an unfolding file; data convert repacks jets-layout files");
  const int64_t n = f.numJets();
  nlohmann::json attrs = nlohmann::json::object();
  for (const auto& [k, v] : f.attributes()) attrs[k] = v;
  attrs["repacked_from"] = in;
  // A one-hot pid is written as indices: keep its width as the class count.
  if (!attrs.contains("class_names") && f.numClasses() > 0) {
    nlohmann::json names = nlohmann::json::array();
    for (int64_t c = 0; c < f.numClasses(); ++c) names.push_back(std::to_string(c));
    attrs["class_names"] = names.dump();
  }
  WriteOptions o = options;
  o.with_weights = f.has("weights");
  JetFileWriter w(out, FileLayout::kJets, f.numParticles(), f.hasLabels(), attrs, o);
  // Blocks of whole chunks of the output, so that memory stays at one block.
  const int64_t block = std::max<int64_t>(1, 16384 / o.chunk_rows) * o.chunk_rows;
  Progress progress("convert", n, "jets");
  for (int64_t b = 0; b < n; b += block) {
    w.append(f.readJets(b, std::min(n, b + block)));
    progress.update(std::min(n, b + block));
  }
  progress.finish();
  w.commit();
  logInfo("wrote {} ({} jets, P={}, chunks of {} jets, deflate {}{})", out, n, f.numParticles(),
          o.chunk_rows, o.deflate_level, o.shuffle ? " + shuffle" : "");
}

}  // namespace foldfarm::data
