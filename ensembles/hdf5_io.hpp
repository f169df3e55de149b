#pragma once
// Small HDF5 access for the ensembles layer's own files (chain weights, chain histograms,
// bands): numeric datasets of any rank stored as float64, and scalar attributes on the
// root or on a dataset. Every hid_t has one owner (H5Object) and every HDF5 call goes
// through a check that throws Error naming the call, the file and what was being done.
//
// Thread-safety: the Debian HDF5 library is not thread-safe; use from one thread at a time.
#include <cstdint>
#include <string>
#include <vector>

namespace foldfarm::ensembles {

// A dense float64 array with its shape (row-major).
struct H5Array {
  std::vector<double> values;
  std::vector<uint64_t> dims;
};

class H5Object {
 public:
  H5Object() = default;
  explicit H5Object(int64_t id) : id_(id) {}
  ~H5Object() noexcept;
  H5Object(const H5Object&) = delete;
  H5Object& operator=(const H5Object&) = delete;
  H5Object(H5Object&& o) noexcept : id_(o.id_) { o.id_ = -1; }
  H5Object& operator=(H5Object&& o) noexcept;
  int64_t id() const { return id_; }
  // Gives up ownership without closing.
  int64_t release() {
    int64_t id = id_;
    id_ = -1;
    return id;
  }

 private:
  int64_t id_ = -1;
};

class H5File {
 public:
  // Creates (truncates) `path`. Callers write to an AtomicFile::tempPath() and commit.
  static H5File create(const std::string& path);
  // Opens read-only. Throws InputError("<path>: cannot open as HDF5 ...") if unreadable.
  static H5File openRead(const std::string& path);

  const std::string& path() const { return path_; }
  bool has(const std::string& name) const;  // dataset or group, "a/b" paths allowed

  // Writes `values` with shape `dims` (product must match); intermediate groups created.
  void write(const std::string& name, const std::vector<double>& values,
             const std::vector<uint64_t>& dims);
  void write(const std::string& name, const std::vector<double>& values) {
    write(name, values, {static_cast<uint64_t>(values.size())});
  }
  // Reads any numeric dataset converted to float64. Throws InputError if missing.
  H5Array read(const std::string& name) const;
  // Reads rows [row0, row0+rows) of the first dimension.
  H5Array readRows(const std::string& name, uint64_t row0, uint64_t rows) const;
  std::vector<uint64_t> shape(const std::string& name) const;

  // Attributes on `object` ("/" = the file root, or a dataset/group path).
  void setAttr(const std::string& object, const std::string& key, const std::string& value);
  void setAttr(const std::string& object, const std::string& key, double value);
  void setAttr(const std::string& object, const std::string& key, int64_t value);
  std::string attrString(const std::string& object, const std::string& key) const;
  double attrDouble(const std::string& object, const std::string& key) const;
  bool hasAttr(const std::string& object, const std::string& key) const;

  // Closes the file (flushing it); throws Error when HDF5 reports a failure.
  void close();

 private:
  H5File(std::string path, int64_t id) : path_(std::move(path)), file_(id) {}
  std::string path_;
  H5Object file_;
};

}  // namespace foldfarm::ensembles
