#include "core/data/jet_writer.hpp"

#include <algorithm>
#include <stdexcept>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/data/h5_file.hpp"

namespace foldfarm::data {
namespace {

constexpr int64_t F = kNumParticleFeatures;

struct Extra {
  std::string name;
  std::vector<float> values;
  int64_t rows, cols;
};

}  // namespace

struct JetFileWriter::Impl {
  AtomicFile atomic;
  FileLayout layout;
  int64_t P;
  bool with_labels;
  nlohmann::json attrs;
  WriteOptions opt;
  H5Handle file;
  std::vector<std::pair<std::string, H5Handle>> sets;
  std::vector<Extra> extras;
  int64_t rows = 0;
  bool first = true;

  Impl(std::string path, FileLayout l, int64_t p, bool labels, nlohmann::json a, WriteOptions o)
      : atomic(std::move(path)), layout(l), P(p), with_labels(labels), attrs(std::move(a)), opt(o) {
    if (opt.deflate_level < 0 || opt.deflate_level > 9)
      throw InputError(atomic.path() + ": deflate level " + std::to_string(opt.deflate_level) +
                       " is out of range; use 0 (none) to 9");
    file = h5Create(atomic.tempPath());
  }

  std::string ctx(const std::string& name) const {
    return atomic.path() + ": dataset '" + name + "'";
  }

  // Creates an extendible, chunked, compressed dataset with trailing dims `tail`.
  void create(const std::string& name, std::vector<hsize_t> tail, hid_t type) {
    std::vector<hsize_t> dims{0}, maxd{H5S_UNLIMITED},
        chunk{static_cast<hsize_t>(std::max<int64_t>(1, opt.chunk_rows))};
    for (hsize_t t : tail) {
      dims.push_back(t);
      maxd.push_back(t);
      chunk.push_back(t);
    }
    H5Handle space =
        FF_H5_OWN(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), maxd.data()),
                  H5Kind::kDataspace, ctx(name));
    H5Handle dcpl = FF_H5_OWN(H5Pcreate(H5P_DATASET_CREATE), H5Kind::kPropList, ctx(name));
    // No creation and modification times in the header: a file's bytes are its content's.
    FF_H5_CHECK(H5Pset_obj_track_times(dcpl.get(), 0), ctx(name));
    FF_H5_CHECK(H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()), ctx(name));
    if (opt.shuffle) FF_H5_CHECK(H5Pset_shuffle(dcpl.get()), ctx(name));
    if (opt.deflate_level > 0)
      FF_H5_CHECK(H5Pset_deflate(dcpl.get(), static_cast<unsigned>(opt.deflate_level)), ctx(name));
    sets.emplace_back(name, FF_H5_OWN(H5Dcreate2(file.get(), name.c_str(), type, space.get(),
                                                 H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
                                      H5Kind::kDataset, ctx(name)));
  }

  hid_t find(const std::string& name) const {
    for (auto& [n, h] : sets)
      if (n == name) return h.get();
    return -1;
  }

  void appendRows(const std::string& name, const void* data, int64_t n, hid_t memtype) {
    if (n == 0) return;
    hid_t ds = find(name);
    if (ds < 0) throw std::invalid_argument(ctx(name) + ": not created by the first append");
    auto d = h5Dims(ds);
    const hsize_t old = d[0];
    d[0] = old + static_cast<hsize_t>(n);
    FF_H5_CHECK(H5Dset_extent(ds, d.data()), ctx(name));
    H5Handle fspace = FF_H5_OWN(H5Dget_space(ds), H5Kind::kDataspace, ctx(name));
    std::vector<hsize_t> start(d.size(), 0), count = d;
    start[0] = old;
    count[0] = static_cast<hsize_t>(n);
    FF_H5_CHECK(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start.data(), nullptr,
                                    count.data(), nullptr),
                ctx(name));
    H5Handle mspace =
        FF_H5_OWN(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr),
                  H5Kind::kDataspace, ctx(name));
    FF_H5_CHECK(H5Dwrite(ds, memtype, mspace.get(), fspace.get(), H5P_DEFAULT, data), ctx(name));
  }

  void writeAttr(hid_t obj, const std::string& name, const nlohmann::json& v) {
    if (v.is_string()) {
      h5WriteStringAttr(obj, name, v.get<std::string>());
    } else if (v.is_boolean()) {
      h5WriteInt64Attr(obj, name, v.get<bool>() ? 1 : 0);
    } else if (v.is_number_integer()) {
      h5WriteInt64Attr(obj, name, v.get<int64_t>());
    } else if (v.is_number_unsigned()) {
      h5WriteInt64Attr(obj, name, static_cast<int64_t>(v.get<uint64_t>()));
    } else if (v.is_number_float()) {
      h5WriteDoubleAttr(obj, name, v.get<double>());
    } else {
      h5WriteStringAttr(obj, name, v.dump());
    }
  }
};

static void checkSize(const char* what, size_t got, int64_t want) {
  if (got != static_cast<size_t>(want))
    throw std::invalid_argument(std::string("writer: ") + what + " has " + std::to_string(got) +
                                " values, expected " + std::to_string(want));
}

JetFileWriter::JetFileWriter(std::string path, FileLayout layout, int64_t P, bool with_labels,
                             nlohmann::json attrs, WriteOptions opts)
    : impl_(
          std::make_unique<Impl>(std::move(path), layout, P, with_labels, std::move(attrs), opts)) {
  if (impl_->attrs.is_null()) impl_->attrs = nlohmann::json::object();
  if (!impl_->attrs.is_object())
    throw std::invalid_argument("writer: attributes must be a JSON object");
  impl_->attrs["layout"] = layout == FileLayout::kJets ? "jets" : "unfold";
}

JetFileWriter::~JetFileWriter() = default;
JetFileWriter::JetFileWriter(JetFileWriter&&) noexcept = default;

void JetFileWriter::append(const JetArrays& a) {
  Impl& I = *impl_;
  if (I.layout != FileLayout::kJets)
    throw std::invalid_argument("writer: jets appended to an unfold file");
  if (a.P != I.P)
    throw std::invalid_argument("writer: P=" + std::to_string(a.P) +
                                ", file has P=" + std::to_string(I.P));
  a.checkShapes();
  if (I.with_labels) checkSize("labels", a.labels.size(), a.n);
  if (I.first) {
    I.create("data", {static_cast<hsize_t>(I.P), F}, H5T_IEEE_F32LE);
    I.create("jet", {kNumJetFeatures}, H5T_IEEE_F32LE);
    if (I.with_labels) I.create("pid", {}, H5T_STD_I64LE);
    if (I.opt.with_weights && !a.weights.empty()) I.create("weights", {}, H5T_IEEE_F32LE);
    I.first = false;
  }
  I.appendRows("data", a.particles.data(), a.n, H5T_NATIVE_FLOAT);
  I.appendRows("jet", a.jets.data(), a.n, H5T_NATIVE_FLOAT);
  if (I.with_labels) I.appendRows("pid", a.labels.data(), a.n, H5T_NATIVE_INT64);
  if (I.find("weights") >= 0) {
    checkSize("weights", a.weights.size(), a.n);
    I.appendRows("weights", a.weights.data(), a.n, H5T_NATIVE_FLOAT);
  }
  I.rows += a.n;
}

void JetFileWriter::append(const UnfoldArrays& u) {
  Impl& I = *impl_;
  if (I.layout != FileLayout::kUnfold)
    throw std::invalid_argument("writer: unfolding events appended to a jets file");
  // The levels the events hold (data: reco only; truth: gen only), the same in every append.
  std::vector<std::pair<std::string, const JetArrays*>> levels;
  if (u.hasReco()) levels.emplace_back("reco", &u.reco);
  if (u.hasGen()) levels.emplace_back("gen", &u.gen);
  for (const auto& [name, level] : levels)
    if (level->P != I.P) throw std::invalid_argument("writer: unfolding events with a different P");
  u.checkShapes();
  const int64_t n = u.n();
  const bool subs = std::all_of(levels.begin(), levels.end(), [&](const auto& l) {
    return !(l.first == "reco" ? u.reco_subs : u.gen_subs).empty();
  });
  if (I.first) {
    for (const auto& [name, level] : levels) {
      I.create(name, {static_cast<hsize_t>(I.P), F}, H5T_IEEE_F32LE);
      I.create(name + "_jets", {kNumJetFeatures}, H5T_IEEE_F32LE);
      if (I.opt.with_subs && subs) I.create(name + "_subs", {kNumSubs}, H5T_IEEE_F32LE);
    }
    if (I.opt.with_pass && !u.pass_reco.empty()) I.create("pass_reco", {}, H5T_STD_U8LE);
    if (I.opt.with_pass && !u.pass_gen.empty()) I.create("pass_gen", {}, H5T_STD_U8LE);
    if (I.opt.with_weights && !u.weights.empty()) I.create("weights", {}, H5T_IEEE_F32LE);
    I.first = false;
  }
  for (const char* name : {"reco", "gen"})
    if ((I.find(name) >= 0) != (std::string(name) == "reco" ? u.hasReco() : u.hasGen()))
      throw std::invalid_argument("writer: unfolding events with another set of levels");
  for (const auto& [name, level] : levels) {
    I.appendRows(name, level->particles.data(), n, H5T_NATIVE_FLOAT);
    I.appendRows(name + "_jets", level->jets.data(), n, H5T_NATIVE_FLOAT);
    if (I.find(name + "_subs") >= 0) {
      const std::vector<float>& values = name == "reco" ? u.reco_subs : u.gen_subs;
      checkSize((name + "_subs").c_str(), values.size(), n * kNumSubs);
      I.appendRows(name + "_subs", values.data(), n, H5T_NATIVE_FLOAT);
    }
  }
  if (I.find("pass_reco") >= 0) {
    checkSize("pass_reco", u.pass_reco.size(), n);
    I.appendRows("pass_reco", u.pass_reco.data(), n, H5T_NATIVE_UINT8);
  }
  if (I.find("pass_gen") >= 0) {
    checkSize("pass_gen", u.pass_gen.size(), n);
    I.appendRows("pass_gen", u.pass_gen.data(), n, H5T_NATIVE_UINT8);
  }
  if (I.find("weights") >= 0) {
    checkSize("weights", u.weights.size(), n);
    I.appendRows("weights", u.weights.data(), n, H5T_NATIVE_FLOAT);
  }
  I.rows += n;
}

void JetFileWriter::addFloatDataset(const std::string& name, std::vector<float> values,
                                    int64_t rows, int64_t cols) {
  checkSize(name.c_str(), values.size(), rows * std::max<int64_t>(cols, 1));
  impl_->extras.push_back({name, std::move(values), rows, cols});
}

void JetFileWriter::setAttribute(const std::string& name, const nlohmann::json& value) {
  impl_->attrs[name] = value;
}

int64_t JetFileWriter::rowsWritten() const {
  return impl_->rows;
}

void JetFileWriter::commit() {
  Impl& I = *impl_;
  if (I.first && I.extras.empty())
    throw std::invalid_argument(I.atomic.path() +
                                ": no rows appended; an empty file is not written");
  for (auto& x : I.extras) {
    std::vector<hsize_t> tail;
    if (x.cols > 0) tail.push_back(static_cast<hsize_t>(x.cols));
    I.create(x.name, tail, H5T_IEEE_F32LE);
    I.appendRows(x.name, x.values.data(), x.rows, H5T_NATIVE_FLOAT);
  }
  for (auto& [k, v] : I.attrs.items()) I.writeAttr(I.file.get(), k, v);
  // Closed one by one and checked: a dataset's close writes what its sieve buffer holds.
  for (auto& [name, set] : I.sets) set.close(I.atomic.path() + ": dataset '" + name + "'");
  I.sets.clear();
  I.file.close(I.atomic.path());
  I.atomic.commit();
}

void writeArraysFile(const std::string& path, const std::vector<NamedArray>& arrays,
                     const nlohmann::json& attrs, WriteOptions opts) {
  if (arrays.empty()) throw std::invalid_argument(path + ": no arrays to write");
  JetFileWriter w(path, FileLayout::kJets, 0, false, attrs, opts);
  w.setAttribute("layout", "arrays");
  for (const auto& a : arrays) w.addFloatDataset(a.name, a.values, a.rows, a.cols);
  w.commit();
}

void writeJetFile(const std::string& path, const JetArrays& a, const nlohmann::json& attrs,
                  WriteOptions opts) {
  JetFileWriter w(path, FileLayout::kJets, a.P, !a.labels.empty(), attrs, opts);
  w.append(a);
  w.commit();
}

void writeUnfoldFile(const std::string& path, const UnfoldArrays& u, const nlohmann::json& attrs,
                     WriteOptions opts) {
  JetFileWriter w(path, FileLayout::kUnfold, u.hasGen() ? u.gen.P : u.reco.P, false, attrs, opts);
  w.append(u);
  w.commit();
}

}  // namespace foldfarm::data
