#include "core/data/jet_reader.hpp"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <sstream>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "core/base/error.hpp"
#include "core/base/run_threads.hpp"
#include "core/base/text.hpp"
#include "core/data/h5_file.hpp"
#include "core/data/rng.hpp"

namespace foldfarm::data {
namespace {

constexpr int64_t F = kNumParticleFeatures;
// Chunk cache per open dataset: holds a few chunks so that hyperslabs not aligned with
// chunks decompress each chunk once, yet stays small because a pretraining stream keeps
// hundreds of files open.
constexpr size_t kChunkCacheBytes = 8u << 20;
// A chunk larger than the cache was read and inflated whole for every block read from it
// (h5py's chunks=(N, P, F): 9 minutes and 2.3 GB to inspect 1 GB): such a dataset gets a
// cache of one chunk, up to this, and is read through HDF5 (the direct decoder is for
// chunks up to kDirectChunkBytes).
constexpr size_t kMaxChunkCacheBytes = size_t{1} << 30;
constexpr size_t kDirectChunkBytes = size_t{16} << 20;

// h5py stores bool as a one-byte enum over int8 (values 0/1); HDF5 cannot convert an enum to
// a number, so its own bytes are read (`n` elements of the selection) and widened by the caller.
std::vector<int8_t> readEnumBytes(hid_t ds, hid_t file_type, hid_t mem_space, hid_t file_space,
                                  size_t n, const std::string& name) {
  H5Handle native =
      FF_H5_OWN(H5Tget_native_type(file_type, H5T_DIR_ASCEND), H5Kind::kDatatype, name);
  std::vector<int8_t> bytes(n);
  FF_H5_CHECK(H5Dread(ds, native.get(), mem_space, file_space, H5P_DEFAULT, bytes.data()), name);
  return bytes;
}

std::string typeName(hid_t type) {
  const H5T_class_t cls = H5Tget_class(type);
  const size_t size = H5Tget_size(type);
  switch (cls) {
    case H5T_FLOAT:
      return "float" + std::to_string(8 * size);
    case H5T_INTEGER:
      return std::string(H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int") +
             std::to_string(8 * size);
    case H5T_ENUM:
      return "enum" + std::to_string(8 * size);
    case H5T_STRING:
      return "string";
    default:
      return "other";
  }
}

std::string shapeText(const std::vector<hsize_t>& d) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < d.size(); ++i) os << (i ? "," : "") << d[i];
  os << (d.size() == 1 ? ",)" : ")");
  return os.str();
}

// "6684.0 GiB"; sizes below a GiB in MiB or KiB, so that both sides of a comparison read.
std::string sizeText(double bytes) {
  static const char* const kUnits[] = {"GiB", "MiB", "KiB"};
  double v = bytes / double(1ull << 30);
  int u = 0;
  for (; u < 2 && v < 1; ++u) v *= 1024;
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%.1f %s", v, kUnits[u]);
  return buf;
}

// Product of `dims` times `elem_bytes`, or -1 when it does not fit an int64 (a corrupt or
// hostile header: HDF5 accepts chunked datasets of any declared shape in a 1 KiB file).
int64_t byteSize(const std::vector<hsize_t>& dims, int64_t elem_bytes) {
  int64_t n = elem_bytes;
  for (hsize_t d : dims) {
    if (d > static_cast<hsize_t>(INT64_MAX) ||
        __builtin_mul_overflow(n, static_cast<int64_t>(d), &n))
      return -1;
  }
  return n;
}

// Refuses an allocation of `bytes` beyond readBudgetBytes(), before it is attempted.
void requireWithinBudget(const std::string& path, const std::string& what, double bytes) {
  requireWithinReadBudget(path, what, bytes, "read fewer jets or use a machine with more memory");
}

// "" when the label `x` of `row` is a whole number (a class index as a float); else what is
// wrong with it, for a message that names the file and dataset first.
std::string notAWholeLabel(double x, int64_t row) {
  if (x == std::floor(x) && std::fabs(x) < 1e15) return "";
  return "row " + std::to_string(row) + " holds " + numberText(x) +
         ": labels are class indices (whole numbers); fix the labels";
}

// Opens read-only; InputError saying whether the file is missing or unreadable as HDF5.
H5Handle openChecked(const std::string& path) {
  return h5OpenInput(path, "regenerate or re-copy the file");
}

}  // namespace

struct JetFile::Impl {
  std::string path;
  H5Handle file;
  FileLayout layout = FileLayout::kJets;
  int64_t N = 0, P = 0;
  std::string n_from;  // the dataset whose rows set N
  bool labels = false;
  int64_t label_cols = 0;     // 0: (N,) indices; C: one-hot
  bool float_labels = false;  // (N,) indices stored as floats: each must be a whole number
  int64_t label_classes = 0;  // C: labels must lie in [0, C); 0: unknown (kMaxLabelClasses)
  bool subs = false;          // unfold layout: the subs of every level it holds
  // Unfold layout: the levels the file holds (experimental data: reco only; a truth sample:
  // gen only).
  bool has_reco = false, has_gen = false;
  std::vector<std::string> names;
  mutable std::vector<std::pair<std::string, H5Handle>> open;  // cached dataset handles

  [[noreturn]] void fail(const std::string& dataset, const std::string& what) const {
    throw InputError(path + ": " + (dataset.empty() ? "" : "dataset '" + dataset + "': ") + what);
  }

  // Why the level (reco or gen) of an unfolding file that holds the other one only cannot be
  // read.
  std::string missingLevel(const std::string& level) const {
    const std::string other = level == "reco" ? "gen" : "reco";
    return "is missing: the file holds its " + other + " level only (" +
           (other == "reco" ? "as experimental data does" : "as a truth sample does") +
           "); use a file with the " + level + " level";
  }

  hid_t dataset(const std::string& name) const {
    for (auto& [n, h] : open)
      if (n == name) return h.get();
    if (!h5Exists(file.get(), name))
      fail(name, "missing; expected the " +
                     std::string(layout == FileLayout::kJets
                                     ? "jets layout (data, jet, pid)"
                                     : "unfold layout (reco, gen, reco_jets, gen_jets)") +
                     "; regenerate the file with `foldfarm data synth` or convert it");
    try {
      auto openWith = [&](size_t cache) {
        H5Handle dapl = FF_H5_OWN(H5Pcreate(H5P_DATASET_ACCESS), H5Kind::kPropList, name);
        FF_H5_CHECK(H5Pset_chunk_cache(dapl.get(), 12421, cache, 1.0), name);
        return FF_H5_OWN(H5Dopen2(file.get(), name.c_str(), dapl.get()), H5Kind::kDataset, name);
      };
      H5Handle ds = openWith(kChunkCacheBytes);
      if (const size_t chunk = chunkBytes(ds.get()); chunk > kChunkCacheBytes) {
        ds.close(name);
        ds = openWith(std::min(chunk + (size_t{1} << 20), kMaxChunkCacheBytes));
      }
      open.emplace_back(name, std::move(ds));
    } catch (const InputError&) {
      throw;
    } catch (const Error& e) {
      fail(name, std::string("cannot be opened (corrupt file?): ") + h5LastMessage() +
                     "; regenerate or re-copy the file");
    }
    return open.back().second.get();
  }

  // The bytes of one chunk of a chunked dataset as stored uncompressed; 0 for other layouts.
  static size_t chunkBytes(hid_t ds) {
    H5Handle dcpl = FF_H5_OWN(H5Dget_create_plist(ds), H5Kind::kPropList, "chunk layout");
    if (H5Pget_layout(dcpl.get()) != H5D_CHUNKED) return 0;
    const int rank = H5Pget_chunk(dcpl.get(), 0, nullptr);
    if (rank <= 0) {
      H5Eclear2(H5E_DEFAULT);
      return 0;
    }
    std::vector<hsize_t> chunk(static_cast<size_t>(rank));
    if (H5Pget_chunk(dcpl.get(), rank, chunk.data()) != rank) {
      H5Eclear2(H5E_DEFAULT);
      return 0;
    }
    H5Handle type = FF_H5_OWN(H5Dget_type(ds), H5Kind::kDatatype, "chunk type");
    size_t bytes = H5Tget_size(type.get());
    for (hsize_t c : chunk) bytes *= static_cast<size_t>(c);
    return bytes;
  }

  std::vector<hsize_t> dims(const std::string& name, H5T_class_t* cls = nullptr) const {
    return h5Dims(dataset(name), cls);
  }

  // Checks rank and trailing dims (0 = any); returns the dims.
  std::vector<hsize_t> expect(const std::string& name, std::vector<int64_t> trailing,
                              const char* what) const {
    H5T_class_t cls;
    auto d = dims(name, &cls);
    const size_t rank = trailing.size() + 1;
    bool ok = d.size() == rank;
    for (size_t k = 0; ok && k < trailing.size(); ++k)
      if (trailing[k] > 0 && static_cast<int64_t>(d[k + 1]) != trailing[k]) ok = false;
    if (!ok)
      fail(name,
           "has shape " + shapeText(d) + ", expected " + what + "; fix the producer of this file");
    if (cls != H5T_FLOAT && cls != H5T_INTEGER && cls != H5T_ENUM)
      fail(name, "is not numeric; expected " + std::string(what));
    expectAddressable(name, d);
    expectStored(name, d);
    return d;
  }

  // A dataset whose rows were declared but never written (HDF5 allocates chunked and
  // contiguous storage lazily) reads as zeros; refusing it also keeps a 1 KiB file from
  // declaring 2^40 rows that a caller then sizes its indices by. (H5Dget_space_status
  // cannot tell: it compares stored bytes, which compression makes smaller.)
  void expectStored(const std::string& name, const std::vector<hsize_t>& d) const {
    for (hsize_t x : d)
      if (x == 0) return;  // no storage to speak of; zero sizes are refused elsewhere
    const hid_t ds = dataset(name);
    H5Handle dcpl = FF_H5_OWN(H5Dget_create_plist(ds), H5Kind::kPropList, name);
    expectDecodable(name, dcpl.get());
    const H5D_layout_t layout = H5Pget_layout(dcpl.get());
    if (layout == H5D_VIRTUAL) expectSources(name, dcpl.get(), d);
    bool stored = true;
    if (layout == H5D_CONTIGUOUS) {
      stored = H5Dget_storage_size(ds) > 0;  // allocated whole at the first write
    } else if (layout == H5D_CHUNKED) {
      std::vector<hsize_t> chunk(d.size());
      FF_H5_CHECK(H5Pget_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()), name);
      hsize_t expected = 1;  // fits: at most one chunk per element, and expectAddressable
      for (size_t k = 0; k < d.size(); ++k) expected *= (d[k] + chunk[k] - 1) / chunk[k];
      hsize_t have = 0;
      H5Handle space = FF_H5_OWN(H5Dget_space(ds), H5Kind::kDataspace, name);
      FF_H5_CHECK(H5Dget_num_chunks(ds, space.get(), &have), name);
      stored = have >= expected;
    }  // compact datasets live in the header; virtual ones are their sources' business
    if (!stored)
      fail(name, "has shape " + shapeText(d) +
                     " but not all of it was ever written (an interrupted or broken writer); "
                     "regenerate or re-copy the file");
  }

  // What to say of a filter of `dcpl` this HDF5 cannot decode (h5py's lzf, PyTables' blosc,
  // a plugin not on HDF5_PLUGIN_PATH), "" when there is none. An optional filter (h5py marks
  // lzf and blosc so) that was not available when the file was written was skipped chunk by
  // chunk and is named only when `optional_too` (a read that failed).
  std::string missingFilter(hid_t dcpl, bool optional_too) const {
    const int n = H5Pget_nfilters(dcpl);
    for (int k = 0; k < n; ++k) {
      unsigned flags = 0, conf = 0;
      size_t nvals = 0;
      char fname[128] = {0};
      const H5Z_filter_t id = H5Pget_filter2(dcpl, static_cast<unsigned>(k), &flags, &nvals,
                                             nullptr, sizeof(fname), fname, &conf);
      if (id < 0) {
        H5Eclear2(H5E_DEFAULT);
        continue;
      }
      if ((flags & H5Z_FLAG_OPTIONAL) != 0 && !optional_too) continue;
      const htri_t avail = H5Zfilter_avail(id);
      if (avail < 0) H5Eclear2(H5E_DEFAULT);
      if (avail > 0) continue;
      const std::string label = fname[0] != '\0' ? std::string(fname)
                                : id == 32000    ? std::string("lzf")
                                : id == 32001    ? std::string("blosc")
                                                 : std::string("unnamed");
      return "is compressed with the HDF5 filter '" + label + "' (id " + std::to_string(id) +
             "), which this HDF5 cannot decode (lzf is h5py's own, blosc PyTables'): put the "
             "filter's plugin on HDF5_PLUGIN_PATH (Debian: hdf5-plugin-lzf, "
             "hdf5-filter-plugin-blosc-serial), or rewrite the file with gzip (h5py: "
             "create_dataset(..., compression='gzip', shuffle=True))";
    }
    return "";
  }

  // A mandatory filter this HDF5 cannot decode failed the first read as "truncated or
  // corrupt": named at open instead, with the two ways out.
  void expectDecodable(const std::string& name, hid_t dcpl) const {
    if (const std::string why = missingFilter(dcpl, false); !why.empty()) fail(name, why);
  }

  // Where HDF5 (H5F_prefix_open_file) looks for a virtual dataset's source file `src`: an
  // absolute path as it is, then its bare name; each entry of HDF5_VDS_PREFIX (':'-separated,
  // ${ORIGIN} the merged file's directory); the merged file's directory; the working
  // directory; the directory of the merged file's real path (through symbolic links).
  std::vector<std::string> vdsCandidates(const std::string& src) const {
    namespace fs = std::filesystem;
    std::vector<std::string> out;
    std::string rel = src;
    if (fs::path(src).is_absolute()) {
      out.push_back(src);
      rel = fs::path(src).filename().string();
    }
    const std::string origin = fs::path(path).parent_path().string();
    if (const char* prefixes = std::getenv("HDF5_VDS_PREFIX"); prefixes && *prefixes) {
      std::stringstream list(prefixes);
      for (std::string p; std::getline(list, p, ':');) {
        if (p.empty()) continue;
        for (size_t at; (at = p.find("${ORIGIN}")) != std::string::npos;)
          p.replace(at, 9, origin.empty() ? "." : origin);
        out.push_back((fs::path(p) / rel).string());
      }
    }
    out.push_back((fs::path(origin.empty() ? "." : origin) / rel).string());
    out.push_back(rel);
    std::error_code ec;
    const fs::path real = fs::canonical(path, ec);
    if (!ec) out.push_back((real.parent_path() / rel).string());
    return out;
  }

  // A virtual dataset (a merge of shards) reads the fill value, 0, wherever a source file is
  // missing, holds no such dataset or fewer rows than mapped, or where the mappings leave a
  // gap: jets of zeros, all of class 0, trained on silently. Each source is looked for where
  // HDF5 looks (vdsCandidates), opened, and its dataset checked against what the mapping
  // reads of it; the mappings must cover every value. Printf-style source names (%b) and
  // unlimited mappings, which HDF5 expands as the sources grow, are not checked.
  void expectSources(const std::string& name, hid_t dcpl, const std::vector<hsize_t>& d) const {
    namespace fs = std::filesystem;
    size_t count = 0;
    FF_H5_CHECK(H5Pget_virtual_count(dcpl, &count), name);
    hsize_t mapped = 0, total = 1;
    bool countable = true;
    for (hsize_t x : d) total *= x;
    for (size_t k = 0; k < count; ++k) {
      H5Handle vspace =
          FF_H5_OWN(H5Pget_virtual_vspace(dcpl, k), H5Kind::kDataspace, name + ": mapping");
      const hssize_t points = H5Sget_select_npoints(vspace.get());
      if (points < 0 || static_cast<hsize_t>(points) > total) {
        H5Eclear2(H5E_DEFAULT);
        countable = false;
        continue;
      }
      mapped += static_cast<hsize_t>(points);
      auto text = [&](auto get) {
        const ssize_t len = get(nullptr, 0);
        if (len <= 0) return std::string();
        std::string v(static_cast<size_t>(len) + 1, '\0');
        get(v.data(), v.size());
        v.resize(static_cast<size_t>(len));
        return v;
      };
      std::string src =
          text([&](char* b, size_t n) { return H5Pget_virtual_filename(dcpl, k, b, n); });
      const std::string src_set =
          text([&](char* b, size_t n) { return H5Pget_virtual_dsetname(dcpl, k, b, n); });
      if (src.empty() || src == ".") continue;  // this file's own dataset
      if (src.find("%b") != std::string::npos || src_set.find("%b") != std::string::npos) {
        countable = false;
        continue;
      }
      for (size_t at = 0; (at = src.find("%%", at)) != std::string::npos; ++at)
        src.erase(at, 1);  // "%%" stands for "%"
      std::error_code ec;
      const std::vector<std::string> tried = vdsCandidates(src);
      const auto found = std::find_if(tried.begin(), tried.end(), [&](const std::string& t) {
        return fs::is_regular_file(t, ec);
      });
      const std::string merged = fs::path(path).filename().string();
      if (found == tried.end())
        fail(name, "is a virtual dataset (a merge of files) whose source " + src + ":" + src_set +
                       " cannot be found (its values would read as zeros): restore that file "
                       "beside " +
                       merged + " or under HDF5_VDS_PREFIX, or merge the shards again");
      // The source's dataset, as large as the mapping reads of it.
      H5Handle source = h5OpenRead(*found);
      if (!h5Exists(source.get(), src_set))
        fail(name, "is a virtual dataset (a merge of files) whose source " + *found +
                       " holds no dataset '" + src_set +
                       "' (its values would read as zeros); merge the shards again");
      H5Handle set = FF_H5_OWN(H5Dopen2(source.get(), src_set.c_str(), H5P_DEFAULT),
                               H5Kind::kDataset, *found + ": " + src_set);
      const std::vector<hsize_t> have = h5Dims(set.get());
      H5Handle sspace =
          FF_H5_OWN(H5Pget_virtual_srcspace(dcpl, k), H5Kind::kDataspace, name + ": source");
      const H5S_sel_type sel = H5Sget_select_type(sspace.get());
      if (sel == H5S_SEL_NONE) continue;  // nothing read from it
      hsize_t have_values = 1;
      for (hsize_t x : have) have_values *= x;
      if (sel == H5S_SEL_ALL) {
        // The whole source, as many values as the mapping's part of the merge holds (its
        // extent is not kept with the mapping).
        if (have_values < static_cast<hsize_t>(points))
          fail(name, "is a virtual dataset (a merge of files) that maps " + std::to_string(points) +
                         " values from " + *found + ":" + src_set + ", which has shape " +
                         shapeText(have) +
                         " (the rest would read as zeros); merge the shards again");
        continue;
      }
      std::vector<hsize_t> lo(have.size()), hi(have.size());
      if (H5Sget_simple_extent_ndims(sspace.get()) != static_cast<int>(have.size()) ||
          H5Sget_select_bounds(sspace.get(), lo.data(), hi.data()) < 0) {
        H5Eclear2(H5E_DEFAULT);
        fail(name, "is a virtual dataset (a merge of files) whose source " + *found + ":" +
                       src_set + " has shape " + shapeText(have) +
                       ", not that of its mapping; merge the shards again");
      }
      for (size_t a = 0; a < have.size(); ++a)
        if (hi[a] >= have[a])
          fail(name, "is a virtual dataset (a merge of files) that reads up to row " +
                         std::to_string(hi[0] + 1) + " of " + *found + ":" + src_set +
                         ", which has shape " + shapeText(have) +
                         " (the rest would read as zeros); merge the shards again");
    }
    if (countable && mapped < total)
      fail(name, "is a virtual dataset (a merge of files) that maps " + std::to_string(mapped) +
                     " of its " + std::to_string(total) +
                     " values to sources: the rest would read as zeros; merge the shards again");
  }

  // A per-event column: (N,) or, as numpy's x[:, None] and many writers leave it, (N,1).
  std::vector<hsize_t> expectColumn(const std::string& name) const {
    const std::vector<hsize_t> d = dims(name);
    return d.size() == 2 && d[1] == 1 ? expect(name, {1}, "(N,) or (N,1)")
                                      : expect(name, {}, "(N,)");
  }

  // Every array is read as floats or int64: its byte size must fit an int64.
  void expectAddressable(const std::string& name, const std::vector<hsize_t>& d) const {
    if (byteSize(d, 8) < 0)
      fail(name, "has shape " + shapeText(d) +
                     ", more elements than 64-bit sizes can hold; the file's header is corrupt, "
                     "regenerate or re-copy the file");
  }

  // Rows of a dataset of shape (N, ...) hold no value when a trailing dimension is 0.
  void expectWidth(const std::string& name, const std::vector<hsize_t>& d, const char* what) const {
    for (size_t k = 1; k < d.size(); ++k)
      if (d[k] == 0)
        fail(name, "has shape " + shapeText(d) + ": zero-width rows (" + what +
                       "); fix the producer of this file");
  }

  void expectN(const std::string& name, const std::vector<hsize_t>& d) const {
    if (static_cast<int64_t>(d[0]) != N)
      fail(name, "has " + std::to_string(d[0]) + " rows but '" + n_from + "' has " +
                     std::to_string(N) +
                     "; the file is inconsistent (one of them cut short), regenerate it");
  }

  int64_t resolveEnd(int64_t begin, int64_t end) const {
    if (end < 0) end = N;
    if (begin < 0 || begin > end || end > N)
      throw Error(path + ": rows [" + std::to_string(begin) + ", " + std::to_string(end) +
                  ") outside [0, " + std::to_string(N) + ")");
    return end;
  }

  // Writes `bytes` (one-byte enum values) into `out` as `memtype` (a native integer or
  // floating-point type).
  void widenBytes(const std::vector<int8_t>& bytes, hid_t memtype, void* out,
                  const std::string& name) const {
    const size_t size = H5Tget_size(memtype);
    const H5T_class_t cls = H5Tget_class(memtype);
    auto put = [&](auto* typed) {
      for (size_t i = 0; i < bytes.size(); ++i)
        typed[i] = static_cast<std::remove_pointer_t<decltype(typed)>>(bytes[i]);
    };
    if (cls == H5T_INTEGER && size == 1) return put(static_cast<int8_t*>(out));  // pass_* flags
    if (cls == H5T_FLOAT && size == sizeof(float)) return put(static_cast<float*>(out));
    if (cls == H5T_FLOAT && size == sizeof(double)) return put(static_cast<double*>(out));
    if (cls == H5T_INTEGER && size == sizeof(int64_t)) return put(static_cast<int64_t*>(out));
    if (cls == H5T_INTEGER && size == sizeof(int32_t)) return put(static_cast<int32_t*>(out));
    fail(name, "is a one-byte enum that foldfarm cannot widen here; store it as an integer");
  }

  // Reads rows [begin, end) of `name` into `out` as `memtype`. `row_elems` = product of the
  // trailing dims.
  void readRows(const std::string& name, int64_t begin, int64_t end, hid_t memtype,
                void* out) const {
    if (end <= begin) return;
    hid_t ds = dataset(name);
    try {
      auto d = h5Dims(ds);
      H5Handle fspace = FF_H5_OWN(H5Dget_space(ds), H5Kind::kDataspace, name);
      std::vector<hsize_t> start(d.size(), 0), count = d;
      start[0] = static_cast<hsize_t>(begin);
      count[0] = static_cast<hsize_t>(end - begin);
      FF_H5_CHECK(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start.data(), nullptr,
                                      count.data(), nullptr),
                  name);
      H5Handle mspace =
          FF_H5_OWN(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr),
                    H5Kind::kDataspace, name);
      H5Handle ftype = FF_H5_OWN(H5Dget_type(ds), H5Kind::kDatatype, name);
      if (H5Tget_class(ftype.get()) == H5T_ENUM) {
        // h5py stores bool as an enum over int8: HDF5 cannot convert enums to integers, so
        // read the enum's own bytes (its values are 0/1).
        if (H5Tget_size(ftype.get()) != 1)
          fail(name, "is an enum wider than one byte; store it as an integer");
        // The bytes, each widened to the memory type (labels as int64, weights as float).
        size_t n = 1;
        for (hsize_t c : count) n *= static_cast<size_t>(c);
        widenBytes(readEnumBytes(ds, ftype.get(), mspace.get(), fspace.get(), n, name), memtype,
                   out, name);
        return;
      }
      FF_H5_CHECK(H5Dread(ds, memtype, mspace.get(), fspace.get(), H5P_DEFAULT, out), name);
    } catch (const InputError&) {
      throw;
    } catch (const Error&) {
      // An optional filter this HDF5 lacks, applied to some chunk: named, not "corrupt".
      H5Handle dcpl = FF_H5_OWN(H5Dget_create_plist(ds), H5Kind::kPropList, name);
      if (const std::string why = missingFilter(dcpl.get(), true); !why.empty()) fail(name, why);
      fail(name, "cannot be read (truncated or corrupt file?): " +
                     std::string(h5LastMessage().empty() ? "read failed" : h5LastMessage()) +
                     "; regenerate or re-copy the file");
    }
  }

  // Direct chunk reading: a float32 dataset chunked by whole rows with only the shuffle and
  // deflate filters is read as raw chunks (H5Dread_chunk, under HDF5's lock) and decoded
  // here, outside it, so that several reader threads decompress in parallel (HDF5's own
  // filter pipeline runs under its global lock). Anything else takes H5Dread.
  struct Direct {
    bool usable = false;
    hsize_t chunk_rows = 0;
    std::vector<H5Z_filter_t> filters;  // in pipeline order
    std::vector<hsize_t> dims;
  };
  mutable std::vector<std::pair<std::string, Direct>> direct;

  const Direct& directInfo(const std::string& name) const {
    for (auto& [n, d] : direct)
      if (n == name) return d;
    Direct d;
    const hid_t ds = dataset(name);
    d.dims = h5Dims(ds);
    H5Handle type = FF_H5_OWN(H5Dget_type(ds), H5Kind::kDatatype, name);
    H5Handle dcpl = FF_H5_OWN(H5Dget_create_plist(ds), H5Kind::kPropList, name);
    const bool little = [] {
      const uint32_t one = 1;
      unsigned char b = 0;
      std::memcpy(&b, &one, 1);
      return b == 1;
    }();
    if (little && H5Tequal(type.get(), H5T_IEEE_F32LE) > 0 &&
        H5Pget_layout(dcpl.get()) == H5D_CHUNKED) {
      std::vector<hsize_t> chunk(d.dims.size());
      if (H5Pget_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()) ==
          static_cast<int>(chunk.size())) {
        bool whole_rows = true;
        for (size_t k = 1; k < chunk.size(); ++k) whole_rows &= chunk[k] == d.dims[k];
        bool known = true;
        const int n = H5Pget_nfilters(dcpl.get());
        for (int k = 0; k < n; ++k) {
          unsigned flags = 0, conf = 0;
          size_t nvals = 0;
          const H5Z_filter_t id = H5Pget_filter2(dcpl.get(), static_cast<unsigned>(k), &flags,
                                                 &nvals, nullptr, 0, nullptr, &conf);
          known &= id == H5Z_FILTER_SHUFFLE || id == H5Z_FILTER_DEFLATE;
          d.filters.push_back(id);
        }
        // The pipelines decoded here: deflate, shuffle, or shuffle then deflate; and no
        // chunk option (an edge chunk left unfiltered by DONT_FILTER_PARTIAL_CHUNKS carries
        // a filter mask of 0 all the same).
        using F = std::vector<H5Z_filter_t>;
        const bool pipeline = d.filters == F{H5Z_FILTER_DEFLATE} ||
                              d.filters == F{H5Z_FILTER_SHUFFLE} ||
                              d.filters == F{H5Z_FILTER_SHUFFLE, H5Z_FILTER_DEFLATE};
        unsigned opts = 0;
        const bool plain_chunks = H5Pget_chunk_opts(dcpl.get(), &opts) >= 0 && opts == 0;
        if (!plain_chunks) H5Eclear2(H5E_DEFAULT);
        size_t chunk_bytes = sizeof(float);  // float32, checked above
        for (hsize_t c : chunk) chunk_bytes *= static_cast<size_t>(c);
        d.usable = whole_rows && known && pipeline && plain_chunks && chunk[0] > 0 &&
                   chunk_bytes <= kDirectChunkBytes;
        d.chunk_rows = chunk[0];
      }
    }
    direct.emplace_back(name, std::move(d));
    return direct.back().second;
  }

  // Rows [begin, end) by direct chunk reads into v; false when the dataset does not allow it,
  // a chunk skipped a filter or does not decode here, and then nothing is promised about v:
  // H5Dread reads those rows and decides whether the file is corrupt (a valid pipeline this
  // decoder does not know was called corrupt).
  bool readDirect(const std::string& name, int64_t begin, int64_t end, int64_t row_elems,
                  float* v) const {
    const Direct& d = directInfo(name);
    if (!d.usable) return false;
    const hid_t ds = dataset(name);
    const auto c = static_cast<int64_t>(d.chunk_rows);
    const size_t chunk_bytes = static_cast<size_t>(c * row_elems) * sizeof(float);
    std::vector<unsigned char> raw, a(chunk_bytes), b(chunk_bytes);
    std::vector<hsize_t> offset(d.dims.size(), 0);
    for (int64_t ci = begin / c; ci * c < end; ++ci) {
      offset[0] = static_cast<hsize_t>(ci * c);
      hsize_t stored = 0;
      if (H5Dget_chunk_storage_size(ds, offset.data(), &stored) < 0 || stored == 0) return false;
      raw.resize(static_cast<size_t>(stored));
      uint32_t mask = 0;
      if (H5Dread_chunk(ds, H5P_DEFAULT, offset.data(), &mask, raw.data()) < 0 || mask != 0)
        return false;
      // Undo the filters last to first.
      const unsigned char* cur = raw.data();
      size_t cur_size = raw.size();
      for (auto f = d.filters.rbegin(); f != d.filters.rend(); ++f) {
        unsigned char* out = cur == a.data() ? b.data() : a.data();
        if (*f == H5Z_FILTER_DEFLATE) {
          uLongf got = static_cast<uLongf>(chunk_bytes);
          if (::uncompress(out, &got, cur, static_cast<uLong>(cur_size)) != Z_OK ||
              got != chunk_bytes)
            return false;
        } else {  // shuffle: byte k of every element stored together
          if (cur_size != chunk_bytes) return false;
          const size_t n = chunk_bytes / sizeof(float);
          for (size_t k = 0; k < sizeof(float); ++k) {
            const unsigned char* src = cur + k * n;
            for (size_t i = 0; i < n; ++i) out[i * sizeof(float) + k] = src[i];
          }
        }
        cur = out;
        cur_size = chunk_bytes;
      }
      if (cur_size != chunk_bytes) return false;
      const int64_t lo = std::max(begin, ci * c), hi = std::min(end, (ci + 1) * c);
      std::memcpy(v + (lo - begin) * row_elems,
                  cur + static_cast<size_t>((lo - ci * c) * row_elems) * sizeof(float),
                  static_cast<size_t>((hi - lo) * row_elems) * sizeof(float));
    }
    return true;
  }

  void readFloatsInto(const std::string& name, int64_t begin, int64_t end, int64_t row_elems,
                      bool check, float* v) const {
    if (end <= begin) return;
    // Wide rows (particles) only: small datasets gain nothing.
    if (row_elems < 64 || !readDirect(name, begin, end, row_elems, v))
      readRows(name, begin, end, H5T_NATIVE_FLOAT, v);
    if (!check) return;
    const size_t total = static_cast<size_t>((end - begin) * row_elems);
    bool finite = true;
    for (size_t k = 0; k < total; ++k) finite &= std::isfinite(v[k]);  // vectorises; located below
    if (finite) return;
    for (size_t k = 0; k < total; ++k)
      if (!std::isfinite(v[k])) {
        const int64_t row = begin + static_cast<int64_t>(k) / row_elems;
        // In a particle array: which slot and feature, and whether the slot is padding (its
        // other features 0), where a producer's NaN fill is the usual cause.
        std::string where;
        const int64_t at = static_cast<int64_t>(k) % row_elems;
        if (row_elems > kNumParticleFeatures && row_elems % kNumParticleFeatures == 0) {
          const int64_t slot = at / kNumParticleFeatures, feature = at % kNumParticleFeatures;
          const float* p = v + (static_cast<int64_t>(k) - feature);
          bool padding = true;
          for (int f = 0; f < kNumParticleFeatures; ++f)
            if (f != feature && std::isfinite(p[f]) && p[f] != 0.0f) padding = false;
          where = " in particle slot " + std::to_string(slot) + ", feature " +
                  std::to_string(feature) + (padding ? " (a padding slot: store 0 there)" : "");
        }
        fail(name,
             "row " + std::to_string(row) + " holds a non-finite value (" +
                 (std::isnan(v[k]) ? "NaN" : "Inf") + ")" + where +
                 (std::isnan(v[k]) ? "" : " (a value beyond float32's range reads as Inf too)") +
                 "; drop or fix that jet before using the file");
      }
  }

  std::vector<float> readFloats(const std::string& name, int64_t begin, int64_t end,
                                int64_t row_elems, bool check) const {
    std::vector<float> v(static_cast<size_t>((end - begin) * row_elems));
    readFloatsInto(name, begin, end, row_elems, check, v.data());
    return v;
  }

  // A link among the names foldfarm reads whose target does not open (an external link to a
  // moved file, a soft link to a removed dataset) was left out of the listing in silence and
  // the file called one of neither layout: named with its target.
  void refuseDanglingLinks() const {
    for (const char* n : {"data", "jet", "pid", "weights", "reco", "gen", "reco_jets", "gen_jets",
                          "reco_subs", "gen_subs", "pass_reco", "pass_gen"}) {
      if (std::find(names.begin(), names.end(), n) != names.end() || !h5Exists(file.get(), n))
        continue;
      H5L_info_t info;  // H5Lget_info2 where the API is 1.12's
      if (H5Lget_info(file.get(), n, &info, H5P_DEFAULT) < 0) {
        H5Eclear2(H5E_DEFAULT);
        continue;
      }
      if (info.type != H5L_TYPE_SOFT && info.type != H5L_TYPE_EXTERNAL) continue;
      std::string target(info.u.val_size + 1, '\0');
      if (H5Lget_val(file.get(), n, target.data(), target.size(), H5P_DEFAULT) < 0) {
        H5Eclear2(H5E_DEFAULT);
        target = "?";
      } else if (info.type == H5L_TYPE_EXTERNAL) {
        unsigned flags = 0;
        const char *ext_file = nullptr, *ext_obj = nullptr;
        if (H5Lunpack_elink_val(target.data(), target.size(), &flags, &ext_file, &ext_obj) >= 0)
          target = std::string(ext_file) + ":" + ext_obj;
        else
          H5Eclear2(H5E_DEFAULT);
      } else {
        target.resize(std::strlen(target.c_str()));
      }
      fail(n, std::string("is ") + (info.type == H5L_TYPE_EXTERNAL ? "an external" : "a soft") +
                  " link to " + target +
                  ", which cannot be opened (a moved or removed file or dataset?); restore it "
                  "or store the data in this file");
    }
  }

  void validate() {
    names = h5ListDatasets(file.get());
    refuseDanglingLinks();
    auto has = [&](const char* n) {
      return std::find(names.begin(), names.end(), n) != names.end();
    };
    if (names.empty()) {
      // Datasets in groups (foldfarm's bands.h5, event_weights.h5) are no jets either.
      const std::vector<std::string> deep = h5ListDatasetsDeep(file.get());
      if (deep.empty())
        fail("", "contains no datasets (empty file); regenerate it with `foldfarm data synth`");
      // Jets or events one group down (/jets/data): said so, with the way to the root.
      for (const std::string& n : deep) {
        const size_t slash = n.rfind('/');
        const std::string leaf = slash == std::string::npos ? n : n.substr(slash + 1);
        if (slash != std::string::npos && (leaf == "data" || leaf == "reco" || leaf == "gen")) {
          const std::string group = n.substr(0, slash);
          fail("", "holds its datasets in the group '/" + group +
                       "'; foldfarm reads them at the file's root: move them there (h5py: "
                       "for k in list(f['" +
                       group + "']): f.move('" + group + "/' + k, k))");
        }
      }
      fail("", "holds no jets nor events (" + std::to_string(deep.size()) +
                   " dataset(s) in groups, e.g. " + deep.front() +
                   ": foldfarm's bands, weights or histograms?); give a jets or unfolding file "
                   "(`foldfarm data inspect` lists what this one holds)");
    }
    if (has("data")) {
      layout = FileLayout::kJets;
      auto d = expect("data", {0, F}, "(N,P,13)");
      expectWidth("data", d, "no particle slots per jet");
      N = static_cast<int64_t>(d[0]);
      n_from = "data";
      P = static_cast<int64_t>(d[1]);
      expectN("jet", expect("jet", {kNumJetFeatures}, "(N,4)"));
      if (has("pid")) {
        labels = true;
        H5T_class_t pid_class = H5T_NO_CLASS;
        auto pd = dims("pid", &pid_class);
        if (pid_class == H5T_STRING)
          fail("pid",
               "holds text; labels are class indices (0, 1, ...): map each class name to "
               "its index and store those");
        // A column (N,1) is labels as (N,) are, not a one-hot of one class (before: every
        // label read as class 0, trained on silently).
        if (pd.size() == 1 || (pd.size() == 2 && pd[1] == 1)) {
          label_cols = 0;
          float_labels = pid_class == H5T_FLOAT;
        } else if (pd.size() == 2 && pd[1] >= 2) {
          label_cols = static_cast<int64_t>(pd[1]);
        } else {
          fail("pid", "has shape " + shapeText(pd) +
                          ", expected (N,) labels or (N,C) one-hot of C >= 2 classes");
        }
        expectAddressable("pid", pd);
        expectStored("pid", pd);
        expectN("pid", pd);
        label_classes = label_cols > 0 ? label_cols : classNamesCount();
        if (label_classes > kMaxLabelClasses)
          fail("pid", "has " + std::to_string(label_classes) + " classes, more than foldfarm's " +
                          std::to_string(kMaxLabelClasses) + "; fix the labels");
      }
    } else if (has("reco") || has("gen")) {
      layout = FileLayout::kUnfold;
      has_reco = has("reco");
      has_gen = has("gen");
      const char* first = has_gen ? "gen" : "reco";
      auto d = expect(first, {0, F}, "(N,P,13)");
      expectWidth(first, d, "no particle slots per event");
      N = static_cast<int64_t>(d[0]);
      n_from = first;
      P = static_cast<int64_t>(d[1]);
      if (has_reco && has_gen)
        expectN("reco", expect("reco", {P, F}, "(N,P,13) with the same P as gen"));
      subs = true;
      for (const char* level : {"reco", "gen"}) {
        if (!(std::string(level) == "reco" ? has_reco : has_gen)) continue;
        const std::string jets = std::string(level) + "_jets", sub = std::string(level) + "_subs";
        expectN(jets, expect(jets, {kNumJetFeatures}, "(N,4)"));
        subs = subs && has(sub.c_str());
      }
      if (subs)
        for (const char* sub : {"reco_subs", "gen_subs"})
          if (has(sub)) expectN(sub, expect(sub, {kNumSubs}, "(N,6)"));
      for (const char* opt : {"pass_reco", "pass_gen"})
        if (has(opt)) expectN(opt, expectColumn(opt));
    } else {
      std::string list;
      for (auto& n : names) list += (list.empty() ? "" : ", ") + n;
      if (h5ReadAttrAsString(file.get(), "layout") == "arrays")
        fail("", "is a file of observables (" + list +
                     ", written by `foldfarm data observables`), not jets nor unfolding "
                     "events: give the jets file it was computed from (`foldfarm data "
                     "inspect` shows its columns)");
      fail("",
           "has neither 'data' (jets layout) nor 'reco'/'gen' (unfold layout); datasets present: " +
               list + "; convert it with `foldfarm data convert` or regenerate it");
    }
    if (has("weights")) expectN("weights", expectColumn("weights"));
    if (N == 0)
      fail(layout == FileLayout::kJets ? "data"
           : has_gen                   ? "gen"
                                       : "reco",
           "has 0 jets (empty file); regenerate it");
  }

  // Length of the root attribute `class_names` (a JSON list, as `data synth` writes it); 0
  // when absent or not a list.
  int64_t classNamesCount() const {
    const std::string text = h5ReadAttrAsString(file.get(), "class_names");
    if (text.empty()) return 0;
    const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    return j.is_array() ? static_cast<int64_t>(j.size()) : 0;
  }

  // Class indices must lie in [0, C) (C from the one-hot width or `class_names`, else
  // kMaxLabelClasses): an index beyond would size the model's output layer or index past it.
  void checkLabels(const int64_t* labels, int64_t n, int64_t begin) const {
    const int64_t C = label_classes > 0 ? label_classes : kMaxLabelClasses;
    for (int64_t i = 0; i < n; ++i) {
      if (labels[i] >= 0 && labels[i] < C) continue;
      fail("pid", "row " + std::to_string(begin + i) + " holds label " + std::to_string(labels[i]) +
                      ", outside [0, " + std::to_string(C) + ") (" +
                      (label_classes > 0 ? "the file's classes" : "foldfarm's limit on classes") +
                      "); labels must be class indices, fix them");
    }
  }

  // Weights of the whole file that are all zero leave nothing to fit or histogram (every
  // normalisation divides by their sum). NaN/Inf are refused when read.
  void checkWeightsNotAllZero(const float* w, int64_t n, int64_t begin, int64_t end) const {
    if (begin != 0 || end != N) return;  // a slice may legitimately hold only zeros
    for (int64_t i = 0; i < n; ++i)
      if (w[i] != 0.0f) return;
    failWeightsAllZero();
  }
  [[noreturn]] void failWeightsAllZero() const {
    fail("weights",
         "are all zero (" + std::to_string(N) + " rows); no event would count, fix the weights");
  }
};

JetFile::JetFile(std::string path) : impl_(std::make_unique<Impl>()) {
  impl_->path = std::move(path);
  impl_->file = openChecked(impl_->path);
  try {
    impl_->validate();
  } catch (const InputError&) {
    throw;
  } catch (const Error& e) {
    throw InputError(impl_->path + ": unreadable HDF5 structure (" + std::string(e.what()) +
                     "); regenerate or re-copy the file");
  }
}

JetFile::~JetFile() = default;
JetFile::JetFile(JetFile&&) noexcept = default;
JetFile& JetFile::operator=(JetFile&&) noexcept = default;

const std::string& JetFile::path() const {
  return impl_->path;
}
FileLayout JetFile::layout() const {
  return impl_->layout;
}
int64_t JetFile::numJets() const {
  return impl_->N;
}
int64_t JetFile::numParticles() const {
  return impl_->P;
}
bool JetFile::hasLabels() const {
  return impl_->labels;
}
int64_t JetFile::numClasses() const {
  return impl_->label_classes;
}
bool JetFile::hasSubs() const {
  return impl_->subs;
}
bool JetFile::hasLevel(const std::string& level) const {
  const Impl& I = *impl_;
  return I.layout == FileLayout::kUnfold &&
         (level == "reco" ? I.has_reco : level == "gen" && I.has_gen);
}
bool JetFile::has(const std::string& name) const {
  return std::find(impl_->names.begin(), impl_->names.end(), name) != impl_->names.end();
}

std::vector<DatasetInfo> JetFile::datasets() const {
  std::vector<DatasetInfo> out;
  for (auto& n : impl_->names) {
    DatasetInfo info;
    info.name = n;
    hid_t ds = impl_->dataset(n);
    for (hsize_t d : h5Dims(ds)) info.dims.push_back(static_cast<int64_t>(d));
    H5Handle type = FF_H5_OWN(H5Dget_type(ds), H5Kind::kDatatype, n);
    info.type = typeName(type.get());
    out.push_back(std::move(info));
  }
  return out;
}

std::map<std::string, std::string> JetFile::attributes() const {
  std::map<std::string, std::string> out;
  for (auto& n : h5AttrNames(impl_->file.get())) out[n] = h5ReadAttrAsString(impl_->file.get(), n);
  return out;
}

JetArrays JetFile::readJets(int64_t begin, int64_t end, const std::string& level) const {
  const Impl& I = *impl_;
  end = I.resolveEnd(begin, end);
  requireWithinBudget(I.path, "reading " + std::to_string(end - begin) + " jets",
                      static_cast<double>(end - begin) * (I.P * F + kNumJetFeatures + 3) * 4.0);
  JetArrays a = JetArrays::zeros(end - begin, I.P, I.layout == FileLayout::kJets && I.labels);
  if (has("weights")) a.weights.assign(static_cast<size_t>(end - begin), 0.0f);
  readJetsInto(begin, end, level, a, 0);
  if (has("weights")) I.checkWeightsNotAllZero(a.weights.data(), a.n, begin, end);
  return a;
}

void JetFile::readJetsInto(int64_t begin, int64_t end, const std::string& level, JetArrays& a,
                           int64_t at) const {
  const Impl& I = *impl_;
  end = I.resolveEnd(begin, end);
  const int64_t n = end - begin;
  if (a.P != I.P || at < 0 || at + n > a.n)
    throw Error(I.path + ": readJetsInto: destination too small or P differs");
  std::string pname = "data", jname = "jet";
  if (I.layout == FileLayout::kUnfold) {
    if (level != "reco" && level != "gen")
      I.fail("", "is an unfolding file: choose the level (reco or gen) to read");
    if (!hasLevel(level)) I.fail(level, I.missingLevel(level));
    pname = level;
    jname = level + "_jets";
  }
  I.readFloatsInto(pname, begin, end, I.P * F, true, a.particles.data() + at * I.P * F);
  I.readFloatsInto(jname, begin, end, kNumJetFeatures, true, a.jets.data() + at * kNumJetFeatures);
  if (I.layout == FileLayout::kJets && I.labels) {
    int64_t* labels = a.labels.data() + at;
    if (I.label_cols == 0 && I.float_labels) {
      // Converted to integers, 0.5 would read as label 0: a whole number or refused.
      std::vector<double> v(static_cast<size_t>(n));
      I.readRows("pid", begin, end, H5T_NATIVE_DOUBLE, v.data());
      for (int64_t i = 0; i < n; ++i) {
        const double x = v[static_cast<size_t>(i)];
        if (const std::string why = notAWholeLabel(x, begin + i); !why.empty()) I.fail("pid", why);
        labels[i] = static_cast<int64_t>(x);
      }
    } else if (I.label_cols == 0) {
      I.readRows("pid", begin, end, H5T_NATIVE_INT64, labels);
    } else {
      auto oh = I.readFloats("pid", begin, end, I.label_cols, true);
      for (int64_t i = 0; i < n; ++i) {
        const float* row = oh.data() + i * I.label_cols;
        const float* top = std::max_element(row, row + I.label_cols);
        if (*top <= 0.0f)
          I.fail("pid",
                 "row " + std::to_string(begin + i) +
                     " of the one-hot labels has no class set (no entry > 0); fix the labels");
        // Two classes at the top (1 and 1, or 0.5 and 0.5): argmax took the first in silence.
        if (std::count(row, row + I.label_cols, *top) > 1)
          I.fail("pid", "row " + std::to_string(begin + i) +
                            " of the one-hot labels sets several classes equally; fix the labels");
        labels[i] = top - row;
      }
    }
    I.checkLabels(labels, n, begin);
  }
  if (has("weights")) I.readFloatsInto("weights", begin, end, 1, true, a.weights.data() + at);
}

std::vector<uint8_t> JetFile::readPassFlags(const std::string& name, int64_t begin,
                                            int64_t end) const {
  const Impl& I = *impl_;
  if (!has(name)) return {};
  end = I.resolveEnd(begin, end);
  // Read as double and checked, so that every reader agrees on which events pass: a flag is 0
  // or 1 (bool, an integer or a float), and anything else (0.5, -1, 2, NaN) is refused rather
  // than rounded one way here and another way elsewhere.
  std::vector<uint8_t> flags(static_cast<size_t>(end - begin));
  constexpr int64_t kChunk = int64_t{1} << 20;
  std::vector<double> values;
  for (int64_t lo = begin; lo < end; lo += kChunk) {
    const int64_t hi = std::min(end, lo + kChunk);
    values.resize(static_cast<size_t>(hi - lo));
    I.readRows(name, lo, hi, H5T_NATIVE_DOUBLE, values.data());
    for (int64_t r = lo; r < hi; ++r) {
      const double v = values[static_cast<size_t>(r - lo)];
      if (v != 0.0 && v != 1.0)
        I.fail(name, "row " + std::to_string(r) + " holds " + numberText(v) +
                         ", not a selection flag (0: the event fails, 1: it passes); fix the "
                         "producer of this file");
      flags[static_cast<size_t>(r - begin)] = v == 1.0;
    }
  }
  return flags;
}

UnfoldArrays JetFile::readUnfold(int64_t begin, int64_t end) const {
  const Impl& I = *impl_;
  if (I.layout != FileLayout::kUnfold)
    I.fail("", "is not an unfolding file (no 'reco'/'gen'); use an unfold layout file");
  end = I.resolveEnd(begin, end);
  const int levels = (I.has_reco ? 1 : 0) + (I.has_gen ? 1 : 0);
  requireWithinBudget(I.path, "reading " + std::to_string(end - begin) + " events",
                      static_cast<double>(end - begin) *
                          (levels * (I.P * F + kNumJetFeatures + kNumSubs) + 2) * 4.0);
  UnfoldArrays u;
  for (const char* name : {"reco", "gen"}) {
    if (!hasLevel(name)) continue;
    const std::string level = name;
    JetArrays& a = level == "reco" ? u.reco : u.gen;
    a.n = end - begin;
    a.P = I.P;
    a.particles = I.readFloats(level, begin, end, I.P * F, true);
    a.jets = I.readFloats(level + "_jets", begin, end, kNumJetFeatures, true);
    if (I.subs)
      (level == "reco" ? u.reco_subs : u.gen_subs) =
          I.readFloats(level + "_subs", begin, end, kNumSubs, true);
  }
  for (auto [name, dst] :
       {std::pair{"pass_reco", &u.pass_reco}, std::pair{"pass_gen", &u.pass_gen}})
    if (hasLevel(std::string(name).substr(5))) *dst = readPassFlags(name, begin, end);
  if (has("weights")) {
    u.weights = I.readFloats("weights", begin, end, 1, true);
    I.checkWeightsNotAllZero(u.weights.data(), end - begin, begin, end);
  }
  return u;
}

std::vector<float> JetFile::readFloat(const std::string& name, int64_t begin, int64_t end) const {
  const Impl& I = *impl_;
  end = I.resolveEnd(begin, end);
  auto d = I.dims(name);
  if (d.empty() || static_cast<int64_t>(d[0]) != I.N)
    I.fail(name, "has shape " + shapeText(d) + ", expected " + std::to_string(I.N) + " rows");
  I.expectAddressable(name, d);
  I.expectWidth(name, d, "no values per row");
  int64_t row = 1;
  for (size_t k = 1; k < d.size(); ++k) row *= static_cast<int64_t>(d[k]);
  requireWithinBudget(I.path, "reading dataset '" + name + "'",
                      static_cast<double>(end - begin) * row * 4.0);
  std::vector<float> v = I.readFloats(name, begin, end, row, true);
  if (name == "weights") I.checkWeightsNotAllZero(v.data(), end - begin, begin, end);
  return v;
}

int64_t JetFile::ValueCheck::partRows(int64_t n, int64_t piece_rows) const {
  int64_t rows = 0;
  for (int64_t begin = part * piece_rows; begin < n; begin += parts * piece_rows)
    rows += std::min(piece_rows, n - begin);
  return rows;
}

void JetFile::checkValues(const ValueCheck& how) const {
  const Impl& I = *impl_;
  if (how.parts < 1 || how.part < 0 || how.part >= how.parts)
    throw Error(I.path + ": checkValues: part " + std::to_string(how.part) + " of " +
                std::to_string(how.parts));
  const bool unfold = I.layout == FileLayout::kUnfold;
  int64_t rows = how.rows_per_piece;
  if (rows <= 0) {
    const int levels = unfold ? (I.has_reco ? 1 : 0) + (I.has_gen ? 1 : 0) : 1;
    const double row_bytes = (levels * (I.P * F + kNumJetFeatures + kNumSubs) + 3) * 4.0;
    rows = std::max<int64_t>(1, static_cast<int64_t>((32 << 20) / row_bytes));
    // Whole chunks of the particles: each chunk decompressed once.
    const auto chunk = static_cast<int64_t>(
        I.directInfo(unfold ? (I.has_reco ? "reco" : "gen") : "data").chunk_rows);
    if (chunk > 0) rows = (rows + chunk - 1) / chunk * chunk;
  }
  // This part's pieces: part, part + parts, ...; piece(j) is the j-th of them.
  const int64_t all = (I.N + rows - 1) / rows;
  const int64_t pieces = all > how.part ? (all - how.part + how.parts - 1) / how.parts : 0;
  const auto piece = [&](int64_t j) {
    const int64_t begin = (how.part + j * how.parts) * rows;
    return std::pair{begin, std::min(I.N, begin + rows)};
  };
  const int64_t total = how.partRows(I.N, rows);
  const int threads = h5ReadThreads(
      static_cast<int>(std::clamp<int64_t>(how.threads, 1, std::max<int64_t>(1, pieces))),
      "checking the values of " + I.path);
  // Pieces in order from a shared counter, each thread through its own reader (HDF5 reads
  // under its lock, chunks decompress in parallel). The error reported is that of the lowest
  // piece that failed, as a reading in order would report it; no piece after it is started.
  std::atomic<int64_t> next{0};
  // Refused when all zero over the whole file only.
  std::atomic<bool> weighted{!has("weights") || how.parts > 1};
  std::mutex mu;
  int64_t done = 0, failed = pieces;
  std::exception_ptr error;
  const auto work = [&](const JetFile& f) {
    for (int64_t j = next++; j < pieces; j = next++) {
      try {
        {
          const std::lock_guard<std::mutex> hold(mu);
          if (j > failed) return;
        }
        const auto [begin, end] = piece(j);
        const std::vector<float> weights =
            unfold ? f.readUnfold(begin, end).weights : f.readJets(begin, end).weights;
        if (!weighted &&
            std::any_of(weights.begin(), weights.end(), [](float w) { return w != 0.0f; }))
          weighted = true;
        const std::lock_guard<std::mutex> hold(mu);
        done += end - begin;
        if (how.on_rows) how.on_rows(done, total);
      } catch (...) {
        const std::lock_guard<std::mutex> hold(mu);
        if (j < failed) {
          failed = j;
          error = std::current_exception();
        }
        return;
      }
    }
  };
  if (threads == 1) {
    work(*this);
  } else {
    runThreads(threads, [&](int t) {
      if (t == 0) return work(*this);
      std::optional<JetFile> own;
      try {
        own.emplace(I.path);
      } catch (...) {  // as the first piece would have found it
        const std::lock_guard<std::mutex> hold(mu);
        if (!error) error = std::current_exception();
        return;
      }
      work(*own);
    });
  }
  if (error) std::rethrow_exception(error);
  if (!weighted) I.failWeightsAllZero();
}

namespace {

template <typename T>
std::vector<T> readWhole(const std::string& path, const std::string& name,
                         std::vector<int64_t>* dims_out, hid_t memtype) {
  H5Handle file = openChecked(path);
  if (!h5Exists(file.get(), name))
    throw InputError(path + ": dataset '" + name +
                     "': missing; this command needs it in the input file");
  std::vector<T> v;
  try {
    H5Handle ds =
        FF_H5_OWN(H5Dopen2(file.get(), name.c_str(), H5P_DEFAULT), H5Kind::kDataset, name);
    H5T_class_t cls;
    auto d = h5Dims(ds.get(), &cls);
    H5Handle ftype = FF_H5_OWN(H5Dget_type(ds.get()), H5Kind::kDatatype, name);
    // h5py's bool: an enum over int8 with values 0/1, read as its bytes and widened.
    const bool byte_enum = cls == H5T_ENUM && H5Tget_size(ftype.get()) == 1;
    if (cls != H5T_FLOAT && cls != H5T_INTEGER && !byte_enum)
      throw InputError(path + ": dataset '" + name +
                       "': is not numeric; fix the producer of this file");
    if (d.empty() || d[0] == 0)
      throw InputError(path + ": dataset '" + name + "': has 0 rows (empty file); regenerate it");
    for (size_t k = 1; k < d.size(); ++k)
      if (d[k] == 0)
        throw InputError(path + ": dataset '" + name + "': has shape " + shapeText(d) +
                         ": zero-width rows (no values per row); fix the producer of this file");
    const int64_t bytes = byteSize(d, sizeof(T));
    if (bytes < 0)
      throw InputError(path + ": dataset '" + name + "': has shape " + shapeText(d) +
                       ", more elements than 64-bit sizes can hold; the file's header is corrupt, "
                       "regenerate or re-copy the file");
    requireWithinBudget(path, "reading dataset '" + name + "'", static_cast<double>(bytes));
    size_t total = 1;
    if (dims_out) dims_out->clear();
    for (hsize_t x : d) {
      total *= x;
      if (dims_out) dims_out->push_back(static_cast<int64_t>(x));
    }
    v.resize(total);
    if (byte_enum) {
      const std::vector<int8_t> bytes =
          readEnumBytes(ds.get(), ftype.get(), H5S_ALL, H5S_ALL, total, name);
      for (size_t k = 0; k < total; ++k) v[k] = static_cast<T>(bytes[k]);
    } else {
      FF_H5_CHECK(H5Dread(ds.get(), memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), name);
    }
  } catch (const InputError&) {
    throw;
  } catch (const Error&) {
    throw InputError(path + ": dataset '" + name +
                     "': cannot be read (truncated or corrupt file?): " + h5LastMessage() +
                     "; regenerate or re-copy the file");
  }
  return v;
}

}  // namespace

std::vector<float> readFloatDataset(const std::string& path, const std::string& name,
                                    std::vector<int64_t>* dims) {
  std::vector<int64_t> d;
  auto v = readWhole<float>(path, name, &d, H5T_NATIVE_FLOAT);
  int64_t row = 1;
  for (size_t k = 1; k < d.size(); ++k) row *= d[k];
  for (size_t k = 0; k < v.size(); ++k)
    if (!std::isfinite(v[k]))
      throw InputError(path + ": dataset '" + name + "': row " +
                       std::to_string(static_cast<int64_t>(k) / row) +
                       " holds a non-finite value; drop or fix that jet before using the file");
  if (dims) *dims = d;
  return v;
}

std::vector<int64_t> readInt64Dataset(const std::string& path, const std::string& name,
                                      std::vector<int64_t>* dims) {
  return readWhole<int64_t>(path, name, dims, H5T_NATIVE_INT64);
}

std::vector<int64_t> readClassLabels(const std::string& path, const std::string& name) {
  // Read as doubles: integers convert exactly, and labels stored as floats (numpy's default)
  // are checked to be whole numbers instead of truncated (0.5 read as class 0).
  std::vector<int64_t> d;
  const std::vector<double> v = readWhole<double>(path, name, &d, H5T_NATIVE_DOUBLE);
  const std::string where = path + ": dataset '" + name + "': ";
  if (d.size() == 2 && d[1] == 1) d.pop_back();  // a column of indices, as (N,)
  if (d.size() == 2) {                           // one-hot -> indices
    if (d[1] > kMaxLabelClasses)
      throw InputError(where + "has " + std::to_string(d[1]) + " classes, more than foldfarm's " +
                       std::to_string(kMaxLabelClasses) + "; fix the labels");
    std::vector<int64_t> idx(static_cast<size_t>(d[0]));
    for (int64_t i = 0; i < d[0]; ++i) {
      const auto row = v.begin() + i * d[1];
      const auto top = std::max_element(row, row + d[1]);
      if (!(*top > 0))
        throw InputError(where + "row " + std::to_string(i) +
                         " of the one-hot labels has no class set (no entry > 0); fix the labels");
      if (std::count(row, row + d[1], *top) > 1)
        throw InputError(where + "row " + std::to_string(i) +
                         " of the one-hot labels sets several classes equally; fix the labels");
      idx[static_cast<size_t>(i)] = top - row;
    }
    return idx;
  }
  if (d.size() != 1)
    throw InputError(
        where + "has " + std::to_string(d.size()) +
        " dimensions, expected (N,) labels or (N,C) one-hot; fix the producer of this file");
  std::vector<int64_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (const std::string why = notAWholeLabel(v[i], static_cast<int64_t>(i)); !why.empty())
      throw InputError(where + why);
    if (!(v[i] >= 0 && v[i] < static_cast<double>(kMaxLabelClasses)))
      throw InputError(where + "row " + std::to_string(i) + " holds label " +
                       std::to_string(static_cast<int64_t>(v[i])) + ", outside [0, " +
                       std::to_string(kMaxLabelClasses) +
                       ") (foldfarm's limit on classes); labels must be class indices, fix them");
    out[i] = static_cast<int64_t>(v[i]);
  }
  return out;
}

uint64_t readBudgetBytes() {
  if (const char* env = std::getenv("FOLDFARM_READ_BUDGET_GIB"); env != nullptr && *env != '\0') {
    char* rest = nullptr;
    const double g = std::strtod(env, &rest);
    if (rest == env || *rest != '\0' || !(g > 0) || !std::isfinite(g) || g > 1e9)
      throw InputError(std::string("FOLDFARM_READ_BUDGET_GIB='") + env +
                       "' is not a positive number of GiB; fix or unset it");
    return static_cast<uint64_t>(g * double(1ull << 30));
  }
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page <= 0) return UINT64_MAX;
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page);
}

void requireWithinReadBudget(const std::string& who, const std::string& what, double bytes,
                             const std::string& advice) {
  const uint64_t budget = readBudgetBytes();
  if (bytes > static_cast<double>(budget))
    throw InputError(who + ": " + what + " needs " + sizeText(bytes) +
                     " of memory, more than the read budget of " +
                     sizeText(static_cast<double>(budget)) + " (" +
                     (std::getenv("FOLDFARM_READ_BUDGET_GIB")
                          ? "FOLDFARM_READ_BUDGET_GIB"
                          : "this machine's memory; FOLDFARM_READ_BUDGET_GIB sets it") +
                     "); " + advice);
}

std::string datasetStorageText(const std::string& path, const std::string& name) {
  H5Handle file = h5OpenRead(path);
  if (!h5Exists(file.get(), name))
    throw InputError(path + ": no dataset '" + name + "'; check the file's layout");
  H5Handle ds = FF_H5_OWN(H5Dopen2(file.get(), name.c_str(), H5P_DEFAULT), H5Kind::kDataset, name);
  H5Handle dcpl = FF_H5_OWN(H5Dget_create_plist(ds.get()), H5Kind::kPropList, name);
  const H5D_layout_t layout = H5Pget_layout(dcpl.get());
  if (layout == H5D_CONTIGUOUS) return "contiguous";
  if (layout == H5D_COMPACT) return "compact";
  if (layout != H5D_CHUNKED) return "other";
  const int rank = H5Pget_chunk(dcpl.get(), 0, nullptr);
  std::vector<hsize_t> chunk(static_cast<size_t>(std::max(rank, 0)));
  if (rank > 0) H5Pget_chunk(dcpl.get(), rank, chunk.data());
  std::string out = "chunked " + shapeText(chunk);
  const int n = H5Pget_nfilters(dcpl.get());
  for (int k = 0; k < n; ++k) {
    unsigned flags = 0, conf = 0;
    size_t nvals = 4;
    unsigned vals[4] = {0, 0, 0, 0};
    char fname[64] = {0};
    const H5Z_filter_t id = H5Pget_filter2(dcpl.get(), static_cast<unsigned>(k), &flags, &nvals,
                                           vals, sizeof(fname), fname, &conf);
    out += k == 0 ? " " : "+";
    if (id == H5Z_FILTER_DEFLATE)
      out += "deflate(" + std::to_string(nvals > 0 ? vals[0] : 0) + ")";
    else if (id == H5Z_FILTER_SHUFFLE)
      out += "shuffle";
    else
      out += std::string(fname[0] ? fname : "filter") + "#" + std::to_string(id);
  }
  return out;
}

bool fileHasDataset(const std::string& path, const std::string& name) {
  try {
    H5Handle file = h5OpenRead(path);
    return h5Exists(file.get(), name);
  } catch (const Error&) {
    return false;
  }
}

// ---------------------------------------------------------------------------------------
// BatchStream

namespace {
constexpr uint64_t kPurposeBlockOrder = 0x626c6f636bULL;  // "block"
constexpr uint64_t kPurposeWindow = 0x77696e646fULL;      // "windo"

struct Segment {
  int file;
  int64_t begin, end;  // rows within the file
  int64_t global;      // global index of `begin`
};
}  // namespace

struct BatchStream::Impl {
  StreamOptions opt;
  std::vector<JetFile> files;
  std::vector<int64_t> offsets;  // global row of each file's first row
  std::vector<Segment> blocks;
  int64_t total = 0, per_rank = 0, P = 0;
  bool labels = false;

  int64_t epoch = 0;
  std::vector<Segment> mine;  // this rank's segments for the epoch
  size_t next_segment = 0;
  int64_t window_index = 0;
  // The pool holds the rows read so far and not yet returned; `order` lists pool rows in
  // the order they are handed out (a permutation of the window when shuffling), so every
  // row is copied once from HDF5 into the pool and once into its batch.
  JetArrays pool;
  std::vector<int64_t> pool_rows;  // global row index of each pool row
  std::vector<int64_t> order;
  size_t pos = 0;
  std::vector<int64_t> last_rows;
  bool has_weights = false;

  void loadWindow() {
    // Carry the unread rows (fewer than a batch) to the front of the new pool.
    std::vector<int64_t> rest(order.begin() + static_cast<std::ptrdiff_t>(pos), order.end());
    const size_t stop =
        std::min(mine.size(), next_segment + static_cast<size_t>(opt.window_blocks));
    int64_t wrows = 0;
    for (size_t k = next_segment; k < stop; ++k) wrows += mine[k].end - mine[k].begin;
    JetArrays next = JetArrays::zeros(static_cast<int64_t>(rest.size()) + wrows, P, labels);
    if (has_weights) next.weights.assign(static_cast<size_t>(next.n), 0.0f);
    std::vector<int64_t> next_rows;
    next_rows.reserve(static_cast<size_t>(next.n));
    if (!rest.empty()) {
      const JetArrays carried = pool.subset(rest);
      std::copy(carried.particles.begin(), carried.particles.end(), next.particles.begin());
      std::copy(carried.jets.begin(), carried.jets.end(), next.jets.begin());
      std::copy(carried.labels.begin(), carried.labels.end(), next.labels.begin());
      std::copy(carried.weights.begin(), carried.weights.end(), next.weights.begin());
      for (int64_t r : rest) next_rows.push_back(pool_rows[r]);
    }
    int64_t at = static_cast<int64_t>(rest.size());
    for (; next_segment < stop; ++next_segment) {
      const Segment& s = mine[next_segment];
      files[s.file].readJetsInto(s.begin, s.end, opt.level, next, at);
      at += s.end - s.begin;
      for (int64_t r = s.begin; r < s.end; ++r) next_rows.push_back(s.global + (r - s.begin));
    }
    order.resize(static_cast<size_t>(next.n));
    for (int64_t i = 0; i < next.n; ++i) order[i] = i;
    if (opt.shuffle && wrows > 1) {
      std::vector<int64_t> perm(order.begin() + static_cast<std::ptrdiff_t>(rest.size()),
                                order.end());
      Rng rng(deriveSeed({opt.seed, kPurposeWindow, static_cast<uint64_t>(epoch),
                          static_cast<uint64_t>(opt.rank), static_cast<uint64_t>(window_index)}));
      rng.shuffle(perm);
      std::copy(perm.begin(), perm.end(), order.begin() + static_cast<std::ptrdiff_t>(rest.size()));
    }
    ++window_index;
    pool = std::move(next);
    pool_rows = std::move(next_rows);
    pos = 0;
  }
};

BatchStream::BatchStream(std::vector<std::string> paths, StreamOptions opts)
    : impl_(std::make_unique<Impl>()) {
  Impl& I = *impl_;
  I.opt = opts;
  if (paths.empty()) throw InputError("batch stream: no input files given");
  if (opts.world_size < 1 || opts.rank < 0 || opts.rank >= opts.world_size)
    throw InputError("batch stream: rank " + std::to_string(opts.rank) + " outside world size " +
                     std::to_string(opts.world_size));
  if (opts.batch_size < 1 || opts.block_rows < 1 || opts.window_blocks < 1)
    throw InputError("batch stream: batch_size, block_rows and window_blocks must be >= 1");
  for (size_t f = 0; f < paths.size(); ++f) {
    JetFile jf(paths[f]);
    if (f == 0) {
      I.P = jf.numParticles();
      I.labels = jf.layout() == FileLayout::kJets && jf.hasLabels();
    } else if (jf.numParticles() != I.P || jf.layout() != I.files[0].layout()) {
      throw InputError(paths[f] + ": has P=" + std::to_string(jf.numParticles()) +
                       " / a different layout than " + paths[0] + " (P=" + std::to_string(I.P) +
                       "); stream files of one kind together");
    } else if ((jf.layout() == FileLayout::kJets && jf.hasLabels()) != I.labels) {
      throw InputError(
          paths[f] +
          ": labels present in some files and not in others; stream files of one kind together");
    }
    if (jf.layout() == FileLayout::kUnfold && opts.level != "reco" && opts.level != "gen")
      throw InputError(paths[f] + ": is an unfolding file: stream it with level reco or gen");
    if (jf.layout() == FileLayout::kUnfold && !jf.hasLevel(opts.level))
      throw InputError(paths[f] + ": has no " + opts.level + " level (it holds the " +
                       (opts.level == "reco" ? "gen" : "reco") +
                       " level only); stream another level or file");
    // The block index and one window of rows are what a stream holds; refuse them before
    // the index is built (a file may declare any number of rows in a few bytes).
    const int64_t rows = I.total + jf.numJets();
    requireWithinBudget(
        paths[f], "streaming " + std::to_string(rows) + " jets",
        static_cast<double>(rows) / static_cast<double>(opts.block_rows) * sizeof(Segment) +
            (static_cast<double>(opts.window_blocks) * static_cast<double>(opts.block_rows) +
             static_cast<double>(opts.batch_size)) *
                (I.P * F + kNumJetFeatures + 3) * 4.0);
    I.offsets.push_back(I.total);
    for (int64_t b = 0; b < jf.numJets(); b += opts.block_rows)
      I.blocks.push_back(
          {static_cast<int>(f), b, std::min(jf.numJets(), b + opts.block_rows), I.total + b});
    I.total += jf.numJets();
    if (f == 0)
      I.has_weights = jf.has("weights");
    else if (jf.has("weights") != I.has_weights)
      throw InputError(
          paths[f] +
          ": weights present in some files and not in others; stream files of one kind together");
    I.files.push_back(std::move(jf));
  }
  I.per_rank = I.total / opts.world_size;
  if (I.per_rank == 0)
    throw InputError("batch stream: " + std::to_string(I.total) + " jets cannot be shared by " +
                     std::to_string(opts.world_size) + " ranks");
  startEpoch(0);
}

BatchStream::~BatchStream() = default;
BatchStream::BatchStream(BatchStream&&) noexcept = default;
BatchStream& BatchStream::operator=(BatchStream&&) noexcept = default;

int64_t BatchStream::totalRows() const {
  return impl_->total;
}
int64_t BatchStream::rowsPerRank() const {
  return impl_->per_rank;
}
int64_t BatchStream::numParticles() const {
  return impl_->P;
}
bool BatchStream::hasLabels() const {
  return impl_->labels;
}
int64_t BatchStream::batchesPerEpoch() const {
  const int64_t b = impl_->opt.batch_size;
  return impl_->opt.drop_last ? impl_->per_rank / b : (impl_->per_rank + b - 1) / b;
}
const std::vector<int64_t>& BatchStream::lastRows() const {
  return impl_->last_rows;
}

void BatchStream::startEpoch(int64_t epoch) {
  Impl& I = *impl_;
  I.epoch = epoch;
  std::vector<Segment> order = I.blocks;
  if (I.opt.shuffle) {
    Rng rng(deriveSeed({I.opt.seed, kPurposeBlockOrder, static_cast<uint64_t>(epoch)}));
    rng.shuffle(order);
  }
  const int64_t lo = I.opt.rank * I.per_rank, hi = lo + I.per_rank;
  I.mine.clear();
  int64_t pos = 0;
  for (const Segment& s : order) {
    const int64_t len = s.end - s.begin;
    const int64_t a = std::max(lo, pos), b = std::min(hi, pos + len);
    if (a < b) {
      const int64_t off = a - pos;
      I.mine.push_back({s.file, s.begin + off, s.begin + off + (b - a), s.global + off});
    }
    pos += len;
    if (pos >= hi) break;
  }
  I.next_segment = 0;
  I.window_index = 0;
  I.pool = JetArrays{};
  I.pool_rows.clear();
  I.order.clear();
  I.pos = 0;
}

bool BatchStream::next(JetArrays& batch) {
  Impl& I = *impl_;
  const int64_t b = I.opt.batch_size;
  auto avail = [&] { return static_cast<int64_t>(I.order.size() - I.pos); };
  while (avail() < b && I.next_segment < I.mine.size()) I.loadWindow();
  const int64_t n = avail();
  if (n == 0 || (n < b && I.opt.drop_last)) return false;
  const int64_t take = std::min(n, b);
  const std::vector<int64_t> idx(I.order.begin() + static_cast<std::ptrdiff_t>(I.pos),
                                 I.order.begin() + static_cast<std::ptrdiff_t>(I.pos + take));
  batch = I.pool.subset(idx);
  I.last_rows.resize(static_cast<size_t>(take));
  for (int64_t k = 0; k < take; ++k) I.last_rows[k] = I.pool_rows[idx[k]];
  I.pos += static_cast<size_t>(take);
  return true;
}

}  // namespace foldfarm::data

namespace foldfarm::data {

ClassCensus classCensus(const std::vector<std::string>& files) {
  ClassCensus c;
  std::string named_by, unnamed;  // the first file naming its classes, the first one not
  int64_t top_row = -1;           // where the largest label is (first seen)
  std::string top_file;
  for (const std::string& f : files) {
    const JetFile jf(f);
    const auto attrs = jf.attributes();
    std::vector<std::string> names;
    if (auto a = attrs.find("class_names"); a != attrs.end()) {
      const nlohmann::json j = nlohmann::json::parse(a->second, nullptr, false);
      if (j.is_array())
        for (const auto& n : j) names.push_back(n.is_string() ? n.get<std::string>() : n.dump());
    }
    if (names.empty()) {
      if (unnamed.empty()) unnamed = f;
    } else if (named_by.empty()) {
      named_by = f;
      c.names = names;
    } else if (names != c.names) {
      throw InputError(f + ": names its classes " + nlohmann::json(names).dump() + ", " + named_by +
                       " " + nlohmann::json(c.names).dump() +
                       ": the same label would mean other classes; train on files of one "
                       "labelling (or relabel one to the other's class_names)");
    }
    if (!named_by.empty() && !unnamed.empty())
      throw InputError(unnamed + ": names no classes (no class_names attribute) while " + named_by +
                       " names them " + nlohmann::json(c.names).dump() +
                       ": its labels cannot be matched to those; give it the same class_names "
                       "attribute (if its labels mean those classes) or train on it alone");
    const std::vector<int64_t> labels = readClassLabels(f);
    for (size_t i = 0; i < labels.size(); ++i) {
      const int64_t y = labels[i];
      if (y >= static_cast<int64_t>(c.counts.size())) {
        c.counts.resize(static_cast<size_t>(y) + 1, 0);
        top_row = static_cast<int64_t>(i);
        top_file = f;
      }
      ++c.counts[static_cast<size_t>(y)];
    }
  }
  if (!c.names.empty() || c.counts.empty()) return c;
  int64_t held = 0;
  std::string present;
  for (size_t y = 0; y < c.counts.size(); ++y)
    if (c.counts[y] > 0) {
      ++held;
      if (held <= 8)
        present += (present.empty() ? "" : ", ") + std::to_string(y) + ": " +
                   std::to_string(c.counts[y]) + (c.counts[y] == 1 ? " jet" : " jets");
    }
  const int64_t empty = static_cast<int64_t>(c.counts.size()) - held;
  if (empty > held)
    throw InputError(top_file + ": row " + std::to_string(top_row) + " holds label " +
                     std::to_string(c.counts.size() - 1) + ", which makes " +
                     std::to_string(c.counts.size()) + " classes of which " +
                     std::to_string(empty) + " hold no jet (" + present +
                     (held > 8 ? ", ..." : "") +
                     "): a label beyond the data's classes? fix it, or give the files a "
                     "class_names attribute naming every class their labels index");
  return c;
}

}  // namespace foldfarm::data
