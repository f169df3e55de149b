#include "core/data/h5_file.hpp"

#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>
#include <cstdlib>
#include <exception>
#include <iterator>
#include <mutex>
#include <sstream>

#include "core/base/error.hpp"
#include "core/base/fd.hpp"
#include "core/base/file_stat.hpp"
#include "core/base/log.hpp"

namespace foldfarm::data {
namespace {

// What failed (the API call's description, the outermost entry) and why: when a system
// call failed beneath it, the system's reason (the file driver's entry carries "errno = 28,
// error message = 'No space left on device'"), else the innermost entry, where HDF5 found
// the fault ("truncated file: eof = 1000000, ..., stored_eof = 18869699").
struct StackMessage {
  std::string what, system, inner;
  std::string text() const {
    if (!system.empty()) return what + ": " + system;
    return inner.empty() || inner == what ? what : what + ": " + inner;
  }
};

herr_t walkStack(unsigned /*n*/, const H5E_error2_t* err, void* client) {
  auto* out = static_cast<StackMessage*>(client);
  if (!err || !err->desc) return 0;
  const std::string desc = err->desc;
  if (out->what.empty()) out->what = desc;
  out->inner = desc;
  static const std::string kMark = "error message = '";
  const auto at = desc.find(kMark);
  if (out->system.empty() && at != std::string::npos) {
    const auto from = at + kMark.size();
    out->system = desc.substr(from, desc.find('\'', from) - from);
  }
  return 0;
}

// What each H5Kind is called and how it is closed (in the order of the enum).
struct KindInfo {
  const char* name;
  herr_t (*close)(hid_t);
};
constexpr KindInfo kKinds[] = {{"file", H5Fclose},     {"group", H5Gclose},
                               {"dataset", H5Dclose},  {"dataspace", H5Sclose},
                               {"datatype", H5Tclose}, {"property list", H5Pclose},
                               {"attribute", H5Aclose}};
static_assert(std::size(kKinds) == static_cast<size_t>(H5Kind::kAttribute) + 1);

const char* kindName(H5Kind k) {
  return kKinds[static_cast<size_t>(k)].name;
}

}  // namespace

void h5Init() {
  static std::once_flag once;
  std::call_once(once, [] {
    // No clean-up at exit: HDF5 1.10's termination crashes on a file whose close failed
    // (a full disk), turning one clear error into a segmentation fault. Every file is
    // closed by its owner (H5Handle) before the process ends.
    H5dont_atexit();
    H5open();
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  });
}

bool h5ThreadSafe() {
  static const bool safe = [] {
    h5Init();
    if (const char* e = std::getenv("FOLDFARM_HDF5_THREADSAFE");
        e != nullptr && std::string(e) == "0")
      return false;
    hbool_t b = 0;
    return H5is_library_threadsafe(&b) >= 0 && b > 0;
  }();
  return safe;
}

int h5ReadThreads(int wanted, const std::string& what) {
  if (wanted <= 1 || h5ThreadSafe()) return wanted;
  static std::once_flag said;
  std::call_once(said, [&] {
    unsigned major = 0, minor = 0, release = 0;
    H5get_libversion(&major, &minor, &release);
    logWarn(
        "{}: HDF5 {}.{}.{} is not built thread-safe{}: reading with 1 thread instead of {} "
        "(a thread-safe HDF5, e.g. built with --enable-threadsafe, reads in parallel)",
        what, major, minor, release,
        std::getenv("FOLDFARM_HDF5_THREADSAFE") != nullptr ? " (FOLDFARM_HDF5_THREADSAFE=0)" : "",
        wanted);
  });
  return 1;
}

std::string h5LastMessage() {
  StackMessage msg;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, walkStack, &msg);
  return msg.text();
}

int64_t h5Check(int64_t status, const char* call, const char* file, int line,
                const std::string& context) {
  if (status >= 0) return status;
  std::ostringstream os;
  std::string why = h5LastMessage();
  H5Eclear2(H5E_DEFAULT);
  os << call << " failed at " << file << ":" << line << ": " << (why.empty() ? "HDF5 error" : why)
     << " (" << context << ")";
  throw Error(os.str());
}

H5Handle::H5Handle(hid_t id, H5Kind kind, const char* call, const char* file, int line,
                   const std::string& context)
    : id_(id), kind_(kind) {
  if (id < 0) h5Check(-1, call, file, line, context);
}

H5Handle::~H5Handle() noexcept {
  closeNoThrow();
}

H5Handle& H5Handle::operator=(H5Handle&& o) noexcept {
  if (this != &o) {
    closeNoThrow();
    id_ = o.id_;
    kind_ = o.kind_;
    o.id_ = -1;
  }
  return *this;
}

static herr_t closeId(hid_t id, H5Kind kind) {
  return kKinds[static_cast<size_t>(kind)].close(id);
}

void H5Handle::close(const std::string& context) {
  if (id_ < 0) return;
  hid_t id = id_;
  id_ = -1;
  h5Check(closeId(id, kind_), "H5close", __FILE__, __LINE__, context);
}

void H5Handle::closeNoThrow() noexcept {
  if (id_ < 0) return;
  if (closeId(id_, kind_) < 0) {
    try {
      // While an exception unwinds, its error already tells why the file is abandoned.
      if (std::uncaught_exceptions() > 0)
        logDebug("closing an HDF5 {} failed: {}", kindName(kind_), h5LastMessage());
      else
        logWarn("closing an HDF5 {} failed: {}", kindName(kind_), h5LastMessage());
    } catch (...) {
    }
    H5Eclear2(H5E_DEFAULT);
  }
  id_ = -1;
}

// No HDF5 file lock (flock): outputs are written under a temporary name and renamed into
// place, so no reader meets a file being written. A lock would only fail the open when
// another program holds the file (h5py in append mode) or the file system has no flock (many
// parallel ones), as HDF5_USE_FILE_LOCKING=FALSE is set on such machines.
static void withoutFileLocking(hid_t fapl, const std::string& path) {
#if H5_VERSION_GE(1, 10, 7)
  FF_H5_CHECK(H5Pset_file_locking(fapl, false, true), path);
#else
  (void)fapl;
  (void)path;
#endif
}

H5Handle h5OpenRead(const std::string& path) {
  h5Init();
  H5Handle fapl = FF_H5_OWN(H5Pcreate(H5P_FILE_ACCESS), H5Kind::kPropList, path);
  // Close everything still open when the file is closed (no dangling objects keep it open).
  FF_H5_CHECK(H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG), path);
  withoutFileLocking(fapl.get(), path);
  return FF_H5_OWN(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()), H5Kind::kFile, path);
}

// A file that another program holds open for writing (h5py in 'w' or 'a' mode, a producer
// still running: HDF5 keeps an exclusive flock on it) reads as it happens to be on disk: a
// part of its rows, or a header midway through an update. Asked first with a shared lock,
// dropped at once; a file system without flock answers otherwise and is let through, as are
// writers that run without locks (HDF5_USE_FILE_LOCKING=FALSE).
static void refuseFileBeingWritten(const std::string& path) {
  // Locks turned off here (the usual setting on Lustre and NFS): writers take none either.
  if (const char* env = std::getenv("HDF5_USE_FILE_LOCKING");
      env != nullptr && (std::string(env) == "FALSE" || std::string(env) == "0"))
    return;
  const Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return;                               // the open below says why
  if (::flock(fd.get(), LOCK_SH | LOCK_NB) == 0) return;  // released with the descriptor
  if (errno == EWOULDBLOCK)
    throw InputError(path +
                     ": is open for writing in another program (it holds the file's HDF5 lock: "
                     "h5py in 'w', 'a' or 'r+' mode, a producer still running); close it there "
                     "or let it finish, then run again");
}

H5Handle h5OpenInput(const std::string& path, const std::string& advice, bool own_output) {
  const FileStat st = statPath(path);
  if (!st.regular)
    throw InputError(path + (st.directory ? ": is a directory; give an HDF5 file"
                             : st.exists  ? ": is not a regular file; check the path"
                                          : ": no such file; check the path"));
  if (!own_output) refuseFileBeingWritten(path);
  try {
    return h5OpenRead(path);
  } catch (const Error& e) {
    std::string why = e.what();
    const auto colon = why.find(": ", why.find(" failed at "));
    why = colon == std::string::npos ? "not an HDF5 file" : why.substr(colon + 2);
    throw InputError(path + ": cannot open as HDF5 (truncated, corrupt or not HDF5: " + why + ")" +
                     (advice.empty() ? std::string() : "; " + advice));
  }
}

H5Handle h5Create(const std::string& path) {
  h5Init();
  H5Handle fapl = FF_H5_OWN(H5Pcreate(H5P_FILE_ACCESS), H5Kind::kPropList, path);
  withoutFileLocking(fapl.get(), path);
  // No creation times in the root group's header: the same content gives the same bytes (and
  // sha256, which campaigns record) whenever it is written.
  H5Handle fcpl = FF_H5_OWN(H5Pcreate(H5P_FILE_CREATE), H5Kind::kPropList, path);
  FF_H5_CHECK(H5Pset_obj_track_times(fcpl.get(), 0), path);
  return FF_H5_OWN(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get()), H5Kind::kFile,
                   path);
}

bool h5Exists(hid_t loc, const std::string& name) {
  h5Init();
  htri_t r = H5Lexists(loc, name.c_str(), H5P_DEFAULT);
  if (r < 0) H5Eclear2(H5E_DEFAULT);
  return r > 0;
}

std::vector<hsize_t> h5Dims(hid_t dataset, H5T_class_t* cls) {
  H5Handle space = FF_H5_OWN(H5Dget_space(dataset), H5Kind::kDataspace, "dataspace");
  int rank = static_cast<int>(FF_H5_CHECK(H5Sget_simple_extent_ndims(space.get()), "rank"));
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  if (rank > 0) FF_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), "dims");
  if (cls) {
    H5Handle type = FF_H5_OWN(H5Dget_type(dataset), H5Kind::kDatatype, "datatype");
    *cls = H5Tget_class(type.get());
  }
  return dims;
}

// The iteration callbacks below are called by HDF5's C code: no exception may cross it (an
// allocation failing in push_back, say). Each catches everything and returns -1, which ends
// the iteration with an error the caller's check reports; an object it opened is closed first.
static herr_t collectName(hid_t group, const char* name, const H5L_info_t*, void* client) {
  // H5Oopen + H5Iget_type instead of H5Oget_info*: the latter changed signature in 1.12.
  hid_t obj = H5Oopen(group, name, H5P_DEFAULT);
  if (obj < 0) {
    H5Eclear2(H5E_DEFAULT);
    return 0;
  }
  herr_t rc = 0;
  try {
    if (H5Iget_type(obj) == H5I_DATASET)
      static_cast<std::vector<std::string>*>(client)->push_back(name);
  } catch (...) {
    rc = -1;
  }
  H5Oclose(obj);
  return rc;
}

std::vector<std::string> h5ListDatasets(hid_t file) {
  std::vector<std::string> names;
  FF_H5_CHECK(H5Literate(file, H5_INDEX_NAME, H5_ITER_INC, nullptr, collectName, &names),
              "listing datasets");
  return names;
}

namespace {
struct TreeWalk {
  std::vector<std::string> datasets;
  std::string prefix;
  int depth = 0;
  bool failed = false;  // an exception was caught in a callback
};
}  // namespace

static herr_t collectTree(hid_t group, const char* name, const H5L_info_t*, void* client) {
  auto* walk = static_cast<TreeWalk*>(client);
  hid_t obj = H5Oopen(group, name, H5P_DEFAULT);
  if (obj < 0) {
    H5Eclear2(H5E_DEFAULT);
    return 0;
  }
  herr_t rc = 0;
  try {
    const std::string path = walk->prefix + name;
    if (H5Iget_type(obj) == H5I_DATASET) {
      walk->datasets.push_back(path);
    } else if (H5Iget_type(obj) == H5I_GROUP && walk->depth < 16) {
      const std::string before = walk->prefix;
      walk->prefix = path + "/";
      ++walk->depth;
      // A group that cannot be listed is skipped, as an object that cannot be opened is;
      // a failure of this code ends the whole walk.
      H5Literate(obj, H5_INDEX_NAME, H5_ITER_INC, nullptr, collectTree, walk);
      if (walk->failed) rc = -1;
      --walk->depth;
      walk->prefix = before;
    }
  } catch (...) {
    walk->failed = true;
    rc = -1;
  }
  H5Oclose(obj);
  return rc;
}

std::vector<std::string> h5ListDatasetsDeep(hid_t file) {
  TreeWalk walk;
  FF_H5_CHECK(H5Literate(file, H5_INDEX_NAME, H5_ITER_INC, nullptr, collectTree, &walk),
              "listing datasets");
  return walk.datasets;
}

static void writeAttr(hid_t obj, const std::string& name, hid_t type, const void* value) {
  if (H5Aexists(obj, name.c_str()) > 0) FF_H5_CHECK(H5Adelete(obj, name.c_str()), name);
  H5Handle space = FF_H5_OWN(H5Screate(H5S_SCALAR), H5Kind::kDataspace, name);
  H5Handle attr =
      FF_H5_OWN(H5Acreate2(obj, name.c_str(), type, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                H5Kind::kAttribute, "attribute " + name);
  FF_H5_CHECK(H5Awrite(attr.get(), type, value), "attribute " + name);
  attr.close("attribute " + name);
}

void h5WriteStringAttr(hid_t obj, const std::string& name, const std::string& value) {
  H5Handle type = FF_H5_OWN(H5Tcopy(H5T_C_S1), H5Kind::kDatatype, name);
  FF_H5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE), name);
  FF_H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8), name);
  const char* p = value.c_str();
  writeAttr(obj, name, type.get(), &p);
}

void h5WriteInt64Attr(hid_t obj, const std::string& name, int64_t value) {
  writeAttr(obj, name, H5T_NATIVE_INT64, &value);
}

void h5WriteDoubleAttr(hid_t obj, const std::string& name, double value) {
  writeAttr(obj, name, H5T_NATIVE_DOUBLE, &value);
}

std::string h5ReadAttrAsString(hid_t obj, const std::string& name) {
  h5Init();
  if (H5Aexists(obj, name.c_str()) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    return "";
  }
  H5Handle attr = FF_H5_OWN(H5Aopen(obj, name.c_str(), H5P_DEFAULT), H5Kind::kAttribute, name);
  H5Handle type = FF_H5_OWN(H5Aget_type(attr.get()), H5Kind::kDatatype, name);
  H5Handle space = FF_H5_OWN(H5Aget_space(attr.get()), H5Kind::kDataspace, name);
  if (H5Sget_simple_extent_npoints(space.get()) != 1) return "(array)";
  switch (H5Tget_class(type.get())) {
    case H5T_STRING: {
      if (H5Tis_variable_str(type.get()) > 0) {
        H5Handle mem = FF_H5_OWN(H5Tcopy(H5T_C_S1), H5Kind::kDatatype, name);
        FF_H5_CHECK(H5Tset_size(mem.get(), H5T_VARIABLE), name);
        FF_H5_CHECK(H5Tset_cset(mem.get(), H5Tget_cset(type.get())), name);
        char* s = nullptr;
        FF_H5_CHECK(H5Aread(attr.get(), mem.get(), &s), name);
        std::string out = s ? s : "";
        H5free_memory(s);
        return out;
      }
      size_t size = H5Tget_size(type.get());
      std::string out(size, '\0');
      FF_H5_CHECK(H5Aread(attr.get(), type.get(), out.data()), name);
      out.resize(out.find('\0') == std::string::npos ? out.size() : out.find('\0'));
      return out;
    }
    case H5T_INTEGER: {
      int64_t v = 0;
      FF_H5_CHECK(H5Aread(attr.get(), H5T_NATIVE_INT64, &v), name);
      return std::to_string(v);
    }
    case H5T_FLOAT: {
      double v = 0;
      FF_H5_CHECK(H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &v), name);
      std::ostringstream os;
      os.precision(17);
      os << v;
      return os.str();
    }
    default:
      return "(unsupported type)";
  }
}

static herr_t collectAttr(hid_t, const char* name, const H5A_info_t*, void* client) {
  try {
    static_cast<std::vector<std::string>*>(client)->push_back(name);
  } catch (...) {
    return -1;
  }
  return 0;
}

std::vector<std::string> h5AttrNames(hid_t obj) {
  std::vector<std::string> names;
  hsize_t idx = 0;
  FF_H5_CHECK(H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_INC, &idx, collectAttr, &names),
              "attributes");
  return names;
}

}  // namespace foldfarm::data
