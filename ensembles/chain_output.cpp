#include "ensembles/chain_output.hpp"

#include <fstream>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/data/histogram.hpp"
#include "core/data/observables.hpp"
#include "ensembles/hdf5_io.hpp"

namespace foldfarm::ensembles {
namespace {

void writeMetaAttrs(H5File& f, const nlohmann::json& meta) {
  for (auto it = meta.begin(); it != meta.end(); ++it) {
    const auto& v = it.value();
    if (v.is_string()) {
      f.setAttr("/", it.key(), v.get<std::string>());
    } else if (v.is_number_integer() || v.is_number_unsigned()) {
      // Seeds are uint64: stored as text as well as possible ints would overflow int64.
      if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
        f.setAttr("/", it.key(), std::to_string(v.get<uint64_t>()));
      else
        f.setAttr("/", it.key(), v.get<int64_t>());
    } else if (v.is_number()) {
      f.setAttr("/", it.key(), v.get<double>());
    } else {
      f.setAttr("/", it.key(), v.dump());
    }
  }
}

void writeHistGroup(H5File& f, const std::string& group,
                    const std::vector<ObservableHistogram>& hists) {
  for (const auto& h : hists) {
    const std::string base = group + "/" + h.name;
    f.write(base + "/edges", h.edges);
    f.write(base + "/sumw", h.sumw);
    f.write(base + "/sumw2", h.sumw2);
  }
}

std::vector<ObservableHistogram> readHistGroup(const H5File& f, const std::string& group) {
  std::vector<ObservableHistogram> out;
  for (int o = 0; o < data::kNumSubs; ++o) {
    ObservableHistogram h;
    h.name = data::observableName(o);
    const std::string base = group + "/" + h.name;
    if (!f.has(base)) throw InputError(f.path() + ": missing histogram " + base);
    h.edges = f.read(base + "/edges").values;
    h.sumw = f.read(base + "/sumw").values;
    h.sumw2 = f.read(base + "/sumw2").values;
    if (h.edges.size() != h.sumw.size() + 1 || h.sumw.size() != h.sumw2.size())
      throw InputError(f.path() + ": histogram " + base + " has inconsistent shapes");
    out.push_back(std::move(h));
  }
  return out;
}

std::string join(const std::string& dir, const char* file) { return dir + "/" + file; }

}  // namespace

std::vector<ObservableHistogram> histogramObservables(const std::vector<float>& subs,
                                                      const std::vector<double>& weights,
                                                      const std::vector<uint8_t>& pass) {
  if (subs.size() % data::kNumSubs != 0) throw Error("observables: subs size is not n x 6");
  const size_t n = subs.size() / data::kNumSubs;
  if (!weights.empty() && weights.size() != n)
    throw Error("observables: " + std::to_string(weights.size()) + " weights for " +
                std::to_string(n) + " events");
  if (!pass.empty() && pass.size() != n) throw Error("observables: pass flags length mismatch");
  std::vector<ObservableHistogram> out;
  for (int o = 0; o < data::kNumSubs; ++o) {
    data::Histogram1D h(data::observableBinning(o));
    for (size_t i = 0; i < n; ++i) {
      if (!pass.empty() && !pass[i]) continue;
      h.fill(subs[i * data::kNumSubs + static_cast<size_t>(o)], weights.empty() ? 1.0 : weights[i]);
    }
    out.push_back({data::observableName(o), h.binning().edges, h.sumW(), h.sumW2()});
  }
  return out;
}

void writeChainHistograms(const std::string& dir, const ChainHistograms& h,
                          const nlohmann::json& meta) {
  AtomicFile out(join(dir, kChainHistogramsFile));
  {
    H5File f = H5File::create(out.tempPath());
    writeHistGroup(f, "unfolded", h.unfolded);
    writeHistGroup(f, "prior", h.prior);
    writeMetaAttrs(f, meta);
    f.close();
  }
  out.commit();
}

ChainHistograms readChainHistograms(const std::string& dir) {
  H5File f = H5File::openRead(join(dir, kChainHistogramsFile));
  ChainHistograms h;
  h.unfolded = readHistGroup(f, "unfolded");
  h.prior = readHistGroup(f, "prior");
  return h;
}

void writeChainWeights(const std::string& dir, const ChainWeights& w,
                       const nlohmann::json& meta) {
  auto flatten = [](const std::vector<std::vector<double>>& rows) {
    std::vector<double> flat;
    for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
    return flat;
  };
  // Events per row: push has one row fewer than pull while an iteration is half done.
  const uint64_t n = !w.pull.empty() ? w.pull.front().size()
                                     : (w.push.empty() ? 0 : w.push.front().size());
  AtomicFile out(join(dir, kChainWeightsFile));
  {
    H5File f = H5File::create(out.tempPath());
    f.write("push", flatten(w.push), {w.push.size(), n});
    f.write("pull", flatten(w.pull), {w.pull.size(), n});
    writeMetaAttrs(f, meta);
    f.close();
  }
  out.commit();
}

ChainWeights readChainWeights(const std::string& dir) {
  H5File f = H5File::openRead(join(dir, kChainWeightsFile));
  auto unflatten = [&](const char* name) {
    H5Array a = f.read(name);
    if (a.dims.size() != 2) throw InputError(f.path() + ": '" + name + "' is not 2-D");
    std::vector<std::vector<double>> rows(a.dims[0]);
    for (uint64_t i = 0; i < a.dims[0]; ++i)
      rows[i].assign(a.values.begin() + static_cast<long>(i * a.dims[1]),
                     a.values.begin() + static_cast<long>((i + 1) * a.dims[1]));
    return rows;
  };
  ChainWeights w;
  w.push = unflatten("push");
  w.pull = unflatten("pull");
  return w;
}

void writeJsonAtomic(const std::string& path, const nlohmann::json& j) {
  writeFileAtomic(path, j.dump(2) + "\n");
}

nlohmann::json readJson(const std::string& path) {
  std::string text = readFile(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(path + ": not valid JSON (" + e.what() + "); fix or remove the file");
  }
}

}  // namespace foldfarm::ensembles
