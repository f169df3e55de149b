#pragma once
// HDF5 handle ownership and checked calls. Every hid_t has one owner (H5Handle, move-only,
// closed in a noexcept destructor that logs instead of throwing). Every HDF5 call that can
// fail goes through FF_H5_CHECK / h5Check, which throws Error("<call> failed at file:line:
// <HDF5 message> (<context>)"); readers catch that and rethrow InputError with the file
// and dataset named. HDF5's automatic error-stack printing is silenced process-wide by
// h5Init() (called by every function here; idempotent, thread-safe).
//
// Thread-safety: HDF5 may be used from several threads at once only where the library was
// built thread-safe (Debian's is; a cluster's own build or module often is not): such readers
// take their thread count from h5ReadThreads, which gives one thread otherwise. Everything
// else uses HDF5 from one thread at a time.
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace foldfarm::data {

// Silences HDF5's default error printing (once per process).
void h5Init();

// Whether the HDF5 library this process runs with was built thread-safe
// (H5is_library_threadsafe). FOLDFARM_HDF5_THREADSAFE=0 makes it false (treat a library as
// serial); any other value, or none, asks the library.
bool h5ThreadSafe();
// `wanted` for a reader that calls HDF5 from `wanted` threads at once, where the library is
// thread-safe; else 1, with a warning once per process naming `what` (before: the threads
// used a serial library concurrently, which can crash or read wrong values).
int h5ReadThreads(int wanted, const std::string& what);

// Innermost HDF5 error message of the current error stack ("" if none).
std::string h5LastMessage();

// Throws Error naming `call`, file:line, HDF5's message and `context` when status < 0.
int64_t h5Check(int64_t status, const char* call, const char* file, int line,
                const std::string& context);

#define FF_H5_CHECK(expr, context) \
  ::foldfarm::data::h5Check(static_cast<int64_t>(expr), #expr, __FILE__, __LINE__, (context))

enum class H5Kind { kFile, kGroup, kDataset, kDataspace, kDatatype, kPropList, kAttribute };

class H5Handle {
 public:
  H5Handle() = default;
  // Takes ownership of a valid id (checked: a negative id throws Error with `context`).
  H5Handle(hid_t id, H5Kind kind, const char* call, const char* file, int line,
           const std::string& context);
  ~H5Handle() noexcept;
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;
  H5Handle(H5Handle&& o) noexcept : id_(o.id_), kind_(o.kind_) { o.id_ = -1; }
  H5Handle& operator=(H5Handle&& o) noexcept;

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes now and throws Error on failure (files: flushes data; use before commit()).
  void close(const std::string& context);

 private:
  void closeNoThrow() noexcept;
  hid_t id_ = -1;
  H5Kind kind_ = H5Kind::kFile;
};

// Wraps a call returning hid_t into an owned handle, checking it.
#define FF_H5_OWN(expr, kind, context) \
  ::foldfarm::data::H5Handle((expr), (kind), #expr, __FILE__, __LINE__, (context))

// Opens an existing file read-only / creates (truncates) a file. Throw Error on failure.
H5Handle h5OpenRead(const std::string& path);
H5Handle h5Create(const std::string& path);
// Opens an input file read-only; InputError in one line naming `path` and what it is when it
// cannot: a directory, missing, or not readable as HDF5 ("truncated, corrupt or not HDF5: <the
// library's reason>"), followed by `advice` (e.g. "rerun the chain"). A user's input
// (`own_output` false) that another program holds open for writing (its HDF5 lock: h5py in
// 'w', 'a' or 'r+' mode) is refused saying so, unless HDF5_USE_FILE_LOCKING is FALSE; a file
// foldfarm wrote (a chain's, an aggregation's) is not asked.
H5Handle h5OpenInput(const std::string& path, const std::string& advice, bool own_output = false);

bool h5Exists(hid_t loc, const std::string& name);
// Dimensions of a dataset; element class (H5T_FLOAT, H5T_INTEGER...) through `cls`.
std::vector<hsize_t> h5Dims(hid_t dataset, H5T_class_t* cls = nullptr);
// Names of the datasets directly under the root group.
std::vector<std::string> h5ListDatasets(hid_t file);
// Paths of every dataset in the file ("mass/std", "weights/nominal"), groups walked to a depth
// of 16.
std::vector<std::string> h5ListDatasetsDeep(hid_t file);

// String attributes on an object (file root or dataset): written as variable-length UTF-8.
void h5WriteStringAttr(hid_t obj, const std::string& name, const std::string& value);
void h5WriteInt64Attr(hid_t obj, const std::string& name, int64_t value);
void h5WriteDoubleAttr(hid_t obj, const std::string& name, double value);
// Reads any scalar string/int/float attribute as text (numbers formatted); "" if absent.
std::string h5ReadAttrAsString(hid_t obj, const std::string& name);
std::vector<std::string> h5AttrNames(hid_t obj);

}  // namespace foldfarm::data
