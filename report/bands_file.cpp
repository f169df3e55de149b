#include "report/bands_file.hpp"

#include <hdf5.h>

#include <algorithm>
#include <array>
#include <cmath>

#include "core/base/error.hpp"
#include "core/data/h5_file.hpp"
#include "core/data/observables.hpp"

namespace foldfarm::report {
namespace {

using data::H5Handle;
using data::H5Kind;

// Observables in the table's order, then others by name.
int orderOf(const std::string& name) {
  const int i = data::observableIndex(name);
  return i >= 0 ? i : static_cast<int>(data::observableTable().size());
}

// Called by HDF5's C code: no exception may cross it (-1 ends the iteration with an error).
herr_t collectGroup(hid_t loc, const char* name, const H5L_info_t*, void* op) {
  const hid_t obj = H5Oopen(loc, name, H5P_DEFAULT);
  if (obj < 0) return -1;
  const bool group = H5Iget_type(obj) == H5I_GROUP;
  H5Oclose(obj);
  try {
    if (group) static_cast<std::vector<std::string>*>(op)->push_back(name);
  } catch (...) {
    return -1;
  }
  return 0;
}

std::vector<double> readVector(hid_t file, const std::string& path, const std::string& dataset) {
  const std::string what = path + ": dataset " + dataset;
  if (!data::h5Exists(file, dataset))
    throw InputError(what + " is missing; rerun the aggregation (`foldfarm aggregate`)");
  H5Handle ds = FF_H5_OWN(H5Dopen2(file, dataset.c_str(), H5P_DEFAULT), H5Kind::kDataset, what);
  H5T_class_t cls;
  std::vector<hsize_t> dims = data::h5Dims(ds.get(), &cls);
  if (cls != H5T_FLOAT && cls != H5T_INTEGER) throw InputError(what + " is not numeric");
  hsize_t n = 1;
  for (hsize_t d : dims) n *= d;
  std::vector<double> v(n);
  if (n > 0)
    FF_H5_CHECK(H5Dread(ds.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()),
                what);
  // The aggregation writes finite values only (it refuses non-finite chain outputs): a NaN
  // here is damage, and would be drawn as a gap or a band without a word.
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]))
      throw InputError(what + " holds " + (std::isnan(v[i]) ? "NaN" : "Inf") + " at index " +
                       std::to_string(i) +
                       "; the file is damaged: rerun the aggregation (`foldfarm aggregate`)");
  return v;
}

int64_t readIntAttr(hid_t file, const std::string& key) {
  const std::string s = data::h5ReadAttrAsString(file, key);
  if (s.empty()) return 0;
  try {
    return std::stoll(s);
  } catch (const std::exception&) {
    return 0;
  }
}

}  // namespace

BandsFile readBandsFile(const std::string& path) {
  H5Handle file = data::h5OpenInput(path, "rerun the aggregation (`foldfarm aggregate`)",
                                    /*own_output=*/true);
  try {
    BandsFile out;
    out.replicas = readIntAttr(file.get(), "replicas");
    out.band_replicas = readIntAttr(file.get(), "band_replicas");
    if (out.band_replicas == 0) out.band_replicas = out.replicas;  // written before it existed
    if (!data::h5ReadAttrAsString(file.get(), "band_from_bootstrap").empty())
      out.band_from_bootstrap = readIntAttr(file.get(), "band_from_bootstrap");
    out.chains = readIntAttr(file.get(), "chains");
    std::vector<std::string> groups;
    hsize_t idx = 0;
    FF_H5_CHECK(H5Literate(file.get(), H5_INDEX_NAME, H5_ITER_NATIVE, &idx, collectGroup, &groups),
                path + ": listing observables");
    std::sort(groups.begin(), groups.end(), [](const std::string& a, const std::string& b) {
      return std::make_pair(orderOf(a), a) < std::make_pair(orderOf(b), b);
    });
    for (const auto& g : groups) {
      if (!data::h5Exists(file.get(), g + "/nominal")) continue;
      ObservableBands o;
      o.name = g;
      o.edges = readVector(file.get(), path, g + "/edges");
      o.nominal = readVector(file.get(), path, g + "/nominal");
      o.std = readVector(file.get(), path, g + "/std");
      o.p16 = readVector(file.get(), path, g + "/p16");
      o.p84 = readVector(file.get(), path, g + "/p84");
      o.p2_5 = readVector(file.get(), path, g + "/p2_5");
      o.p97_5 = readVector(file.get(), path, g + "/p97_5");
      o.prior = readVector(file.get(), path, g + "/prior");
      o.correlation = readVector(file.get(), path, g + "/correlation");
      if (data::h5Exists(file.get(), g + "/truth"))
        o.truth = readVector(file.get(), path, g + "/truth");
      // Optional: aggregations before them wrote neither.
      if (data::h5Exists(file.get(), g + "/std_total"))
        o.std_total = readVector(file.get(), path, g + "/std_total");
      if (!o.truth.empty() && data::h5Exists(file.get(), g + "/truth_std"))
        o.truth_std = readVector(file.get(), path, g + "/truth_std");
      const size_t nb = o.nominal.size();
      auto expect = [&](const std::vector<double>& v, size_t n, const char* name) {
        if (v.size() != n)
          throw InputError(path + ": " + g + "/" + name + " has " + std::to_string(v.size()) +
                           " values, expected " + std::to_string(n) + "; the file is inconsistent");
      };
      if (nb == 0) throw InputError(path + ": " + g + "/nominal is empty");
      expect(o.edges, nb + 1, "edges");
      for (size_t b = 0; b < nb; ++b)
        if (!(o.edges[b] < o.edges[b + 1]))
          throw InputError(path + ": " + g + "/edges do not increase at index " +
                           std::to_string(b + 1) +
                           "; the file is damaged: rerun the aggregation (`foldfarm aggregate`)");
      expect(o.std, nb, "std");
      expect(o.p16, nb, "p16");
      expect(o.p84, nb, "p84");
      expect(o.p2_5, nb, "p2_5");
      expect(o.p97_5, nb, "p97_5");
      expect(o.prior, nb, "prior");
      expect(o.correlation, nb * nb, "correlation");
      if (!o.truth.empty()) expect(o.truth, nb, "truth");
      if (!o.truth_std.empty()) expect(o.truth_std, nb, "truth_std");
      if (!o.std_total.empty()) expect(o.std_total, nb, "std_total");
      out.observables.push_back(std::move(o));
    }
    if (out.observables.empty())
      throw InputError(path + ": no observable group with bands; rerun the aggregation");
    return out;
  } catch (const InputError&) {
    throw;
  } catch (const Error& e) {
    throw InputError(path + ": unreadable bands file (" + e.what() + ")");
  }
}

plot::BandPlot bandFigure(const BandsFile& bands, const ObservableBands& o) {
  plot::BandPlot bp;
  bp.title = o.name;
  bp.xlabel = data::observableLabel(o.name);
  bp.edges = o.edges;
  bp.nominal = o.nominal;
  bp.p16 = o.p16;
  bp.p84 = o.p84;
  bp.p2_5 = o.p2_5;
  bp.p97_5 = o.p97_5;
  bp.prior = o.prior;
  bp.truth = o.truth;
  bp.truth_sigma = o.truth_std;
  // The bands are over band_replicas (before: the title gave every replica's count).
  bp.replicas = bands.band_replicas;
  bp.replica_0_in_band = bands.replica0InBand();
  // Without variations the aggregation writes std_total = std, and draws no total band.
  if (o.std_total.size() == o.bins() && o.std_total != o.std) bp.total_sigma = o.std_total;
  return bp;
}

plot::Heatmap correlationFigure(const BandsFile& bands, const ObservableBands& o) {
  plot::Heatmap hm;
  const std::string over =
      bands.band_replicas <= 1 ? std::to_string(bands.band_replicas) + " replica: no spread"
      : bands.replica0InBand()
          ? std::to_string(bands.band_replicas) + " replicas, replica 0 included"
          : "data bootstrap, " + std::to_string(bands.band_replicas) + " replicas";
  hm.title = o.name + ": stat. correlation (" + over + "; grey: empty bins)";
  hm.axis_label = data::observableLabel(o.name);
  hm.zlabel = "correlation coefficient";
  hm.edges = o.edges;
  hm.values = o.correlation;
  const size_t nb = o.bins();
  for (size_t i = 0; i < nb; ++i) {
    if (o.std[i] > 0) continue;
    for (size_t j = 0; j < nb; ++j) {
      hm.values[i * nb + j] = std::nan("");
      hm.values[j * nb + i] = std::nan("");
    }
  }
  return hm;
}

}  // namespace foldfarm::report
