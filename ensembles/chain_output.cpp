#include "ensembles/chain_output.hpp"

#include <sys/statvfs.h>

#include <hdf5.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/json_file.hpp"
#include "core/data/h5_file.hpp"
#include "core/data/histogram.hpp"
#include "core/data/observables.hpp"

namespace foldfarm::ensembles {
namespace {

using data::H5Handle;
using data::H5Kind;
static_assert(sizeof(hid_t) == sizeof(int64_t), "hid_t is passed as int64_t");

H5Handle createH5(const std::string& path) {
  try {
    return data::h5Create(path);
  } catch (const Error&) {
    throw Error(h5CreateFailure(path));
  }
}

H5Handle openH5(const std::string& path) {
  return data::h5OpenInput(path, "rerun the chain", /*own_output=*/true);
}

void writeMetaAttrs(hid_t f, const nlohmann::json& meta) {
  for (auto it = meta.begin(); it != meta.end(); ++it) {
    const auto& v = it.value();
    if (v.is_string()) {
      data::h5WriteStringAttr(f, it.key(), v.get<std::string>());
    } else if (v.is_number_integer() || v.is_number_unsigned()) {
      // Seeds are uint64: stored as text as well as possible ints would overflow int64.
      if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
        data::h5WriteStringAttr(f, it.key(), std::to_string(v.get<uint64_t>()));
      else
        data::h5WriteInt64Attr(f, it.key(), v.get<int64_t>());
    } else if (v.is_number()) {
      data::h5WriteDoubleAttr(f, it.key(), v.get<double>());
    } else {
      data::h5WriteStringAttr(f, it.key(), v.dump());
    }
  }
}

void writeHistGroup(hid_t f, const std::string& path, const std::string& group,
                    const std::vector<ObservableHistogram>& hists) {
  for (const auto& h : hists) {
    const std::string base = group + "/" + h.name;
    writeFloat64Dataset(f, path, base + "/edges", h.edges, {h.edges.size()});
    writeFloat64Dataset(f, path, base + "/sumw", h.sumw, {h.sumw.size()});
    writeFloat64Dataset(f, path, base + "/sumw2", h.sumw2, {h.sumw2.size()});
    if (h.outside)
      writeFloat64Dataset(f, path, base + "/outside", {(*h.outside)[0], (*h.outside)[1]}, {2});
  }
}

// InputError naming the file and dataset when a value is NaN or infinite (a damaged file: a
// chain writes none).
void requireFinite(const std::vector<double>& values, const std::string& path,
                   const std::string& name) {
  for (size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i]))
      throw InputError(path + ": '" + name + "' holds " + std::to_string(values[i]) + " at index " +
                       std::to_string(i) +
                       " (a chain writes finite values only: the file is damaged); rerun the "
                       "chain");
}

std::vector<ObservableHistogram> readHistGroup(hid_t f, const std::string& path,
                                               const std::string& group) {
  std::vector<ObservableHistogram> out;
  for (int o = 0; o < data::kNumSubs; ++o) {
    ObservableHistogram h;
    h.name = data::observableName(o);
    const std::string base = group + "/" + h.name;
    if (!data::h5Exists(f, group) || !data::h5Exists(f, base))
      throw InputError(path + ": missing histogram " + base);
    h.edges = readFloat64Dataset(f, path, base + "/edges");
    h.sumw = readFloat64Dataset(f, path, base + "/sumw");
    h.sumw2 = readFloat64Dataset(f, path, base + "/sumw2");
    if (h.edges.size() != h.sumw.size() + 1 || h.sumw.size() != h.sumw2.size())
      throw InputError(path + ": histogram " + base + " has inconsistent shapes");
    requireFinite(h.edges, path, base + "/edges");
    for (size_t i = 0; i + 1 < h.edges.size(); ++i)
      if (!(h.edges[i] < h.edges[i + 1]))
        throw InputError(path + ": histogram " + base +
                         " has edges that do not increase; rerun the chain");
    requireFinite(h.sumw, path, base + "/sumw");
    requireFinite(h.sumw2, path, base + "/sumw2");
    if (data::h5Exists(f, base + "/outside")) {
      const std::vector<double> outside = readFloat64Dataset(f, path, base + "/outside");
      if (outside.size() != 2)
        throw InputError(path + ": histogram " + base + "/outside holds " +
                         std::to_string(outside.size()) + " values, not 2; rerun the chain");
      requireFinite(outside, path, base + "/outside");
      h.outside = std::array<double, 2>{outside[0], outside[1]};
    }
    out.push_back(std::move(h));
  }
  return out;
}

std::string join(const std::string& dir, const char* file) {
  return dir + "/" + file;
}

// weights.h5's `final` (N_mc), checked to be 1-D.
std::vector<double> readFinal(hid_t f, const std::string& path) {
  std::vector<uint64_t> dims;
  std::vector<double> w = readFloat64Dataset(f, path, "final", &dims);
  if (dims.size() != 1) throw InputError(path + ": 'final' is not 1-D (N_mc); rerun the chain");
  requireFinite(w, path, "final");
  return w;
}

// An (iterations x N) dataset of weights.h5 (push, pull), a row per iteration.
std::vector<std::vector<double>> readIterationRows(hid_t f, const std::string& path,
                                                   const char* name) {
  std::vector<uint64_t> dims;
  const std::vector<double> values = readFloat64Dataset(f, path, name, &dims);
  if (dims.size() != 2) throw InputError(path + ": '" + name + "' is not 2-D");
  requireFinite(values, path, name);
  std::vector<std::vector<double>> rows(dims[0]);
  for (uint64_t i = 0; i < dims[0]; ++i)
    rows[i].assign(values.begin() + static_cast<long>(i * dims[1]),
                   values.begin() + static_cast<long>((i + 1) * dims[1]));
  return rows;
}

}  // namespace

std::vector<ObservableHistogram> histogramObservables(
    const std::vector<float>& subs, const std::vector<double>& weights,
    const std::vector<uint8_t>& pass, const std::vector<std::vector<double>>& edges) {
  if (subs.size() % data::kNumSubs != 0) throw Error("observables: subs size is not n x 6");
  const size_t n = subs.size() / data::kNumSubs;
  if (!weights.empty() && weights.size() != n)
    throw Error("observables: " + std::to_string(weights.size()) + " weights for " +
                std::to_string(n) + " events");
  if (!pass.empty() && pass.size() != n) throw Error("observables: pass flags length mismatch");
  std::vector<ObservableHistogram> out;
  for (int o = 0; o < data::kNumSubs; ++o) {
    if (!edges.empty() && edges.size() != static_cast<size_t>(data::kNumSubs))
      throw Error("observables: " + std::to_string(edges.size()) + " binnings for " +
                  std::to_string(data::kNumSubs) + " observables");
    data::Histogram1D h(edges.empty() ? data::observableBinning(o)
                                      : data::Binning{edges[static_cast<size_t>(o)]});
    for (size_t i = 0; i < n; ++i) {
      if (!pass.empty() && !pass[i]) continue;
      h.fill(subs[i * data::kNumSubs + static_cast<size_t>(o)], weights.empty() ? 1.0 : weights[i]);
    }
    out.push_back({data::observableName(o), h.binning().edges, h.sumW(), h.sumW2(),
                   std::array<double, 2>{h.underflow(), h.overflow()}});
  }
  return out;
}

void writeFloat64Dataset(int64_t file, const std::string& path, const std::string& name,
                         const std::vector<double>& values, const std::vector<uint64_t>& dims) {
  const std::string ctx = path + ": writing " + name;
  const uint64_t count =
      std::accumulate(dims.begin(), dims.end(), uint64_t{1}, std::multiplies<uint64_t>());
  if (count != values.size()) throw Error(ctx + ": shape does not match data size");
  std::vector<hsize_t> hd(dims.begin(), dims.end());
  H5Handle space = FF_H5_OWN(H5Screate_simple(static_cast<int>(hd.size()), hd.data(), nullptr),
                             H5Kind::kDataspace, ctx);
  // No modification times in the objects' headers (HDF5 keeps one per object by default): the
  // same values give the same bytes, and the same sha256, whenever a chain writes them.
  H5Handle gcpl = FF_H5_OWN(H5Pcreate(H5P_GROUP_CREATE), H5Kind::kPropList, ctx);
  FF_H5_CHECK(H5Pset_obj_track_times(gcpl.get(), 0), ctx);
  for (size_t slash = name.find('/'); slash != std::string::npos;
       slash = name.find('/', slash + 1)) {
    const std::string group = name.substr(0, slash);
    if (group.empty() || data::h5Exists(file, group)) continue;
    H5Handle g = FF_H5_OWN(H5Gcreate2(file, group.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT),
                           H5Kind::kGroup, ctx);
    g.close(ctx);
  }
  H5Handle dcpl = FF_H5_OWN(H5Pcreate(H5P_DATASET_CREATE), H5Kind::kPropList, ctx);
  FF_H5_CHECK(H5Pset_obj_track_times(dcpl.get(), 0), ctx);
  H5Handle dset = FF_H5_OWN(H5Dcreate2(file, name.c_str(), H5T_IEEE_F64LE, space.get(), H5P_DEFAULT,
                                       dcpl.get(), H5P_DEFAULT),
                            H5Kind::kDataset, ctx);
  if (!values.empty())
    FF_H5_CHECK(
        H5Dwrite(dset.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), ctx);
  dset.close(ctx);  // checked: the close writes what the sieve buffer holds
}

std::vector<double> readFloat64Dataset(int64_t file, const std::string& path,
                                       const std::string& name, std::vector<uint64_t>* dims) {
  if (!data::h5Exists(file, name)) throw InputError(path + ": missing dataset '" + name + "'");
  const std::string ctx = path + ": reading " + name;
  H5Handle dset = FF_H5_OWN(H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Kind::kDataset, ctx);
  H5T_class_t cls;
  const std::vector<hsize_t> d = data::h5Dims(dset.get(), &cls);
  if (cls != H5T_FLOAT && cls != H5T_INTEGER) throw InputError(ctx + ": not numeric");
  uint64_t count = 1;
  for (hsize_t x : d) count *= x;
  std::vector<double> v(count);
  if (count > 0)
    FF_H5_CHECK(H5Dread(dset.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()),
                ctx);
  if (dims) dims->assign(d.begin(), d.end());
  return v;
}

void writeChainHistograms(const std::string& dir, const ChainHistograms& h,
                          const nlohmann::json& meta) {
  AtomicFile out(join(dir, kChainHistogramsFile));
  {
    H5Handle f = createH5(out.tempPath());
    writeHistGroup(f.get(), out.tempPath(), "unfolded", h.unfolded);
    writeHistGroup(f.get(), out.tempPath(), "prior", h.prior);
    for (size_t i = 0; i < h.iterations.size(); ++i)
      writeHistGroup(f.get(), out.tempPath(), "iterations/" + std::to_string(i + 1),
                     h.iterations[i]);
    writeMetaAttrs(f.get(), meta);
    f.close(out.tempPath() + ": closing");
  }
  out.commit();
}

ChainHistograms readChainHistograms(const std::string& dir) {
  const std::string path = join(dir, kChainHistogramsFile);
  H5Handle f = openH5(path);
  ChainHistograms h;
  h.unfolded = readHistGroup(f.get(), path, "unfolded");
  h.prior = readHistGroup(f.get(), path, "prior");
  for (int i = 1; data::h5Exists(f.get(), "iterations/" + std::to_string(i)); ++i)
    h.iterations.push_back(readHistGroup(f.get(), path, "iterations/" + std::to_string(i)));
  return h;
}

void writeChainWeights(const std::string& dir, const ChainWeights& w, const nlohmann::json& meta,
                       bool iterations) {
  auto flatten = [](const std::vector<std::vector<double>>& rows) {
    std::vector<double> flat;
    for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
    return flat;
  };
  // Events per row: push has one row fewer than pull while an iteration is half done.
  const uint64_t n =
      !w.pull.empty() ? w.pull.front().size() : (w.push.empty() ? 0 : w.push.front().size());
  AtomicFile out(join(dir, kChainWeightsFile));
  {
    H5Handle f = createH5(out.tempPath());
    if (iterations) {
      writeFloat64Dataset(f.get(), out.tempPath(), "push", flatten(w.push), {w.push.size(), n});
      writeFloat64Dataset(f.get(), out.tempPath(), "pull", flatten(w.pull), {w.pull.size(), n});
    }
    if (!w.final.empty())
      writeFloat64Dataset(f.get(), out.tempPath(), "final", w.final, {w.final.size()});
    writeMetaAttrs(f.get(), meta);
    f.close(out.tempPath() + ": closing");
  }
  out.commit();
}

ChainWeights readChainWeights(const std::string& dir) {
  const std::string path = join(dir, kChainWeightsFile);
  H5Handle f = openH5(path);
  ChainWeights w;
  w.push = readIterationRows(f.get(), path, "push");
  w.pull = readIterationRows(f.get(), path, "pull");
  if (data::h5Exists(f.get(), "final")) w.final = readFinal(f.get(), path);
  return w;
}

ChainWeights readChainPushAndFinal(const std::string& dir) {
  const std::string path = join(dir, kChainWeightsFile);
  H5Handle f = openH5(path);
  ChainWeights w;
  if (data::h5Exists(f.get(), "push")) w.push = readIterationRows(f.get(), path, "push");
  if (data::h5Exists(f.get(), "final")) w.final = readFinal(f.get(), path);
  return w;
}

void writeLogitOffsets(const std::string& file, const LogitOffsets& o) {
  AtomicFile out(file);
  {
    H5Handle f = createH5(out.tempPath());
    // float64 holds every float32 exactly: read back, the same offsets bit for bit.
    writeFloat64Dataset(f.get(), out.tempPath(), "train",
                        std::vector<double>(o.train.begin(), o.train.end()), {o.train.size()});
    writeFloat64Dataset(f.get(), out.tempPath(), "eval",
                        std::vector<double>(o.eval.begin(), o.eval.end()), {o.eval.size()});
    f.close(out.tempPath() + ": closing");
  }
  out.commit();
}

std::optional<LogitOffsets> readLogitOffsets(const std::string& file) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) return std::nullopt;
  H5Handle f = openH5(file);
  LogitOffsets o;
  for (auto [name, to] : {std::pair{"train", &o.train}, std::pair{"eval", &o.eval}}) {
    const std::vector<double> v = readFloat64Dataset(f.get(), file, name);
    to->assign(v.begin(), v.end());
  }
  return o;
}

std::optional<uint64_t> chainFinalWeightsRows(const std::string& dir) {
  const std::string path = join(dir, kChainWeightsFile);
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return std::nullopt;
  H5Handle f = openH5(path);
  if (!data::h5Exists(f.get(), "final")) return std::nullopt;
  H5Handle dset =
      FF_H5_OWN(H5Dopen2(f.get(), "final", H5P_DEFAULT), H5Kind::kDataset, path + ": final");
  const std::vector<hsize_t> d = data::h5Dims(dset.get());
  if (d.size() != 1) throw InputError(path + ": 'final' is not 1-D (N_mc); rerun the chain");
  return static_cast<uint64_t>(d[0]);
}

std::vector<double> readChainFinalWeights(const std::string& dir) {
  const std::string path = join(dir, kChainWeightsFile);
  H5Handle f = openH5(path);
  return readFinal(f.get(), path);
}

std::string h5CreateFailure(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                                     : path.substr(0, slash);
  struct statvfs fs {};
  if (::statvfs(dir.c_str(), &fs) == 0 &&
      (fs.f_bavail == 0 || (fs.f_files > 0 && fs.f_favail == 0)))
    return path + ": cannot create HDF5 file: No space left on device (" +
           (fs.f_bavail == 0 ? "no free block" : "no free inode") + " on the file system of " +
           dir + ")";
  return path + ": cannot create HDF5 file (check the directory is writable)";
}

std::string jsonText(const nlohmann::json& j) {
  return j.dump(2) + "\n";
}

void writeJsonAtomic(const std::string& path, const nlohmann::json& j) {
  writeFileAtomic(path, jsonText(j));
}

int chainFormatOf(const nlohmann::json& record, const nlohmann::json& steps) {
  if (record.is_object()) {
    const auto it = record.find("chain_format");
    if (it != record.end() && it->is_number_integer()) return it->get<int>();
  }
  if (!steps.is_array() || steps.empty()) return 0;
  for (const nlohmann::json& s : steps)
    if (!s.is_object() || !s.contains("class_balance")) return 1;
  return 2;
}

std::string chainFormatText(int format) {
  std::string s = "chain format " + std::to_string(format);
  if (format == 1)
    return s +
           " (foldfarm builds before 2026-12-06 07:37 UTC, whose steps did not balance the "
           "classes)";
  if (format > kChainFormat) return s + " (a newer foldfarm build than this one)";
  return s;
}

nlohmann::json readJson(const std::string& path) {
  return readJsonFile(path, "fix or remove the file", JsonWriter::kProgram);
}

}  // namespace foldfarm::ensembles
