#include "ensembles/hdf5_io.hpp"

#include <hdf5.h>

#include <numeric>

#include "core/base/error.hpp"
#include "core/base/log.hpp"

namespace foldfarm::ensembles {
namespace {

[[noreturn]] void throwH5(const char* call, const char* file, int line, const std::string& ctx) {
  throw Error(std::string("HDF5 call ") + call + " failed at " + file + ":" +
              std::to_string(line) + " (" + ctx + ")");
}

// HDF5 returns a negative value on failure for every call used here.
#define FF_H5(expr, ctx)                                            \
  ([&]() {                                                          \
    auto ff_h5_result = (expr);                                     \
    if (ff_h5_result < 0) throwH5(#expr, __FILE__, __LINE__, (ctx)); \
    return ff_h5_result;                                            \
  }())

struct SilenceHdf5Errors {
  // HDF5 prints its own error stack to stderr; our checks report failures as one line.
  SilenceHdf5Errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }
};
const SilenceHdf5Errors g_silence;

uint64_t product(const std::vector<uint64_t>& dims) {
  return std::accumulate(dims.begin(), dims.end(), uint64_t{1}, std::multiplies<uint64_t>());
}

}  // namespace

H5Object::~H5Object() noexcept {
  if (id_ < 0) return;
  herr_t rc = -1;
  switch (H5Iget_type(id_)) {
    case H5I_FILE: rc = H5Fclose(id_); break;
    case H5I_GROUP: rc = H5Gclose(id_); break;
    case H5I_DATASET: rc = H5Dclose(id_); break;
    case H5I_DATASPACE: rc = H5Sclose(id_); break;
    case H5I_ATTR: rc = H5Aclose(id_); break;
    case H5I_DATATYPE: rc = H5Tclose(id_); break;
    case H5I_GENPROP_LST: rc = H5Pclose(id_); break;
    default: rc = H5Idec_ref(id_); break;
  }
  if (rc < 0) logWarn("could not close HDF5 object {}", static_cast<long long>(id_));
}

H5Object& H5Object::operator=(H5Object&& o) noexcept {
  if (this != &o) {
    H5Object old(id_);
    id_ = o.id_;
    o.id_ = -1;
  }
  return *this;
}

H5File H5File::create(const std::string& path) {
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (id < 0) throw Error(path + ": cannot create HDF5 file (check the directory is writable)");
  return H5File(path, id);
}

H5File H5File::openRead(const std::string& path) {
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) throw InputError(path + ": cannot open as HDF5 (missing or not an HDF5 file)");
  return H5File(path, id);
}

void H5File::close() {
  if (file_.id() < 0) return;
  hid_t id = file_.release();
  FF_H5(H5Fclose(id), path_ + ": closing");
}

bool H5File::has(const std::string& name) const {
  // Check every prefix: H5Lexists fails (rather than returning false) on a missing parent.
  std::string prefix;
  size_t start = 0;
  while (start <= name.size()) {
    size_t slash = name.find('/', start);
    std::string part = name.substr(start, slash == std::string::npos ? std::string::npos
                                                                     : slash - start);
    if (!part.empty()) {
      prefix += (prefix.empty() ? "" : "/") + part;
      if (H5Lexists(file_.id(), prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    }
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return true;
}

void H5File::write(const std::string& name, const std::vector<double>& values,
                   const std::vector<uint64_t>& dims) {
  const std::string ctx = path_ + ": writing " + name;
  if (product(dims) != values.size()) throw Error(ctx + ": shape does not match data size");
  std::vector<hsize_t> hd(dims.begin(), dims.end());
  H5Object space(FF_H5(H5Screate_simple(static_cast<int>(hd.size()), hd.data(), nullptr), ctx));
  H5Object lcpl(FF_H5(H5Pcreate(H5P_LINK_CREATE), ctx));
  FF_H5(H5Pset_create_intermediate_group(lcpl.id(), 1), ctx);
  H5Object dset(FF_H5(H5Dcreate2(file_.id(), name.c_str(), H5T_IEEE_F64LE, space.id(),
                                 lcpl.id(), H5P_DEFAULT, H5P_DEFAULT),
                      ctx));
  if (!values.empty())
    FF_H5(H5Dwrite(dset.id(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()),
          ctx);
}

std::vector<uint64_t> H5File::shape(const std::string& name) const {
  if (!has(name)) throw InputError(path_ + ": missing dataset '" + name + "'");
  const std::string ctx = path_ + ": reading shape of " + name;
  H5Object dset(FF_H5(H5Dopen2(file_.id(), name.c_str(), H5P_DEFAULT), ctx));
  H5Object space(FF_H5(H5Dget_space(dset.id()), ctx));
  int rank = FF_H5(H5Sget_simple_extent_ndims(space.id()), ctx);
  std::vector<hsize_t> hd(static_cast<size_t>(rank));
  FF_H5(H5Sget_simple_extent_dims(space.id(), hd.data(), nullptr), ctx);
  return std::vector<uint64_t>(hd.begin(), hd.end());
}

H5Array H5File::read(const std::string& name) const {
  auto dims = shape(name);
  if (dims.empty()) {
    H5Array out;
    out.values.resize(1);
    const std::string ctx = path_ + ": reading " + name;
    H5Object dset(FF_H5(H5Dopen2(file_.id(), name.c_str(), H5P_DEFAULT), ctx));
    FF_H5(H5Dread(dset.id(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                  out.values.data()),
          ctx);
    return out;
  }
  return readRows(name, 0, dims[0]);
}

H5Array H5File::readRows(const std::string& name, uint64_t row0, uint64_t rows) const {
  auto dims = shape(name);
  const std::string ctx = path_ + ": reading " + name;
  if (dims.empty() || row0 + rows > dims[0])
    throw InputError(ctx + ": rows out of range (file has " +
                     std::to_string(dims.empty() ? 0 : dims[0]) + ")");
  H5Array out;
  out.dims = dims;
  out.dims[0] = rows;
  out.values.resize(product(out.dims));
  if (out.values.empty()) return out;
  H5Object dset(FF_H5(H5Dopen2(file_.id(), name.c_str(), H5P_DEFAULT), ctx));
  H5Object fspace(FF_H5(H5Dget_space(dset.id()), ctx));
  std::vector<hsize_t> start(dims.size(), 0), count(out.dims.begin(), out.dims.end());
  start[0] = row0;
  FF_H5(H5Sselect_hyperslab(fspace.id(), H5S_SELECT_SET, start.data(), nullptr, count.data(),
                            nullptr),
        ctx);
  H5Object mspace(
      FF_H5(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr), ctx));
  FF_H5(H5Dread(dset.id(), H5T_NATIVE_DOUBLE, mspace.id(), fspace.id(), H5P_DEFAULT,
                out.values.data()),
        ctx);
  return out;
}

namespace {

H5Object createScalarAttr(hid_t file, const std::string& object, const std::string& key,
                          hid_t type, const std::string& ctx) {
  if (H5Aexists_by_name(file, object.c_str(), key.c_str(), H5P_DEFAULT) > 0)
    FF_H5(H5Adelete_by_name(file, object.c_str(), key.c_str(), H5P_DEFAULT), ctx);
  H5Object space(FF_H5(H5Screate(H5S_SCALAR), ctx));
  return H5Object(FF_H5(H5Acreate_by_name(file, object.c_str(), key.c_str(), type, space.id(),
                                          H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                        ctx));
}

}  // namespace

void H5File::setAttr(const std::string& object, const std::string& key,
                     const std::string& value) {
  const std::string ctx = path_ + ": attribute " + key;
  H5Object type(FF_H5(H5Tcopy(H5T_C_S1), ctx));
  FF_H5(H5Tset_size(type.id(), value.empty() ? 1 : value.size()), ctx);
  FF_H5(H5Tset_strpad(type.id(), H5T_STR_NULLPAD), ctx);
  H5Object attr = createScalarAttr(file_.id(), object, key, type.id(), ctx);
  const char* data = value.empty() ? "" : value.data();
  FF_H5(H5Awrite(attr.id(), type.id(), data), ctx);
}

void H5File::setAttr(const std::string& object, const std::string& key, double value) {
  const std::string ctx = path_ + ": attribute " + key;
  H5Object attr = createScalarAttr(file_.id(), object, key, H5T_IEEE_F64LE, ctx);
  FF_H5(H5Awrite(attr.id(), H5T_NATIVE_DOUBLE, &value), ctx);
}

void H5File::setAttr(const std::string& object, const std::string& key, int64_t value) {
  const std::string ctx = path_ + ": attribute " + key;
  H5Object attr = createScalarAttr(file_.id(), object, key, H5T_STD_I64LE, ctx);
  FF_H5(H5Awrite(attr.id(), H5T_NATIVE_INT64, &value), ctx);
}

bool H5File::hasAttr(const std::string& object, const std::string& key) const {
  return H5Aexists_by_name(file_.id(), object.c_str(), key.c_str(), H5P_DEFAULT) > 0;
}

std::string H5File::attrString(const std::string& object, const std::string& key) const {
  const std::string ctx = path_ + ": attribute " + key + " of " + object;
  if (!hasAttr(object, key)) throw InputError(path_ + ": missing attribute '" + key + "'");
  H5Object attr(
      FF_H5(H5Aopen_by_name(file_.id(), object.c_str(), key.c_str(), H5P_DEFAULT, H5P_DEFAULT),
            ctx));
  H5Object ftype(FF_H5(H5Aget_type(attr.id()), ctx));
  if (H5Tget_class(ftype.id()) != H5T_STRING) throw InputError(ctx + ": not a string");
  if (H5Tis_variable_str(ftype.id()) > 0) {
    H5Object mtype(FF_H5(H5Tcopy(H5T_C_S1), ctx));
    FF_H5(H5Tset_size(mtype.id(), H5T_VARIABLE), ctx);
    char* str = nullptr;
    FF_H5(H5Aread(attr.id(), mtype.id(), &str), ctx);
    std::string out = str ? str : "";
    H5free_memory(str);
    return out;
  }
  size_t size = H5Tget_size(ftype.id());
  std::string out(size, '\0');
  H5Object mtype(FF_H5(H5Tcopy(H5T_C_S1), ctx));
  FF_H5(H5Tset_size(mtype.id(), size), ctx);
  FF_H5(H5Tset_strpad(mtype.id(), H5T_STR_NULLPAD), ctx);
  FF_H5(H5Aread(attr.id(), mtype.id(), out.data()), ctx);
  while (!out.empty() && out.back() == '\0') out.pop_back();
  return out;
}

double H5File::attrDouble(const std::string& object, const std::string& key) const {
  const std::string ctx = path_ + ": attribute " + key + " of " + object;
  if (!hasAttr(object, key)) throw InputError(path_ + ": missing attribute '" + key + "'");
  H5Object attr(
      FF_H5(H5Aopen_by_name(file_.id(), object.c_str(), key.c_str(), H5P_DEFAULT, H5P_DEFAULT),
            ctx));
  double v = 0;
  FF_H5(H5Aread(attr.id(), H5T_NATIVE_DOUBLE, &v), ctx);
  return v;
}

}  // namespace foldfarm::ensembles
