#pragma once
// Writers of deliberately malformed HDF5 files for the validation tests.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "core/data/h5_file.hpp"
#include "core/data/jet_writer.hpp"
#include "core/data/synth.hpp"

namespace foldfarm::data::badfiles {

// Writes (or replaces) the dataset `name` of `path`, of shape `dims`, as values of
// `file_type` given in `mem_type` (as another program would have stored them).
inline void replaceDataset(const std::string& path, const char* name, hid_t file_type,
                           hid_t mem_type, const void* values, const std::vector<hsize_t>& dims) {
  H5Handle f = FF_H5_OWN(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), H5Kind::kFile, path);
  if (H5Lexists(f.get(), name, H5P_DEFAULT) > 0)
    FF_H5_CHECK(H5Ldelete(f.get(), name, H5P_DEFAULT), name);
  H5Handle space = FF_H5_OWN(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
                             H5Kind::kDataspace, name);
  H5Handle ds = FF_H5_OWN(
      H5Dcreate2(f.get(), name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
      H5Kind::kDataset, name);
  FF_H5_CHECK(H5Dwrite(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values), name);
}

// The same, 1-D of `n` values.
inline void replaceDataset(const std::string& path, const char* name, hid_t file_type,
                           hid_t mem_type, const void* values, hsize_t n) {
  replaceDataset(path, name, file_type, mem_type, values, std::vector<hsize_t>{n});
}

inline void writeRawFloat(hid_t file, const std::string& name, const std::vector<hsize_t>& dims,
                          const std::vector<float>& values) {
  H5Handle space = FF_H5_OWN(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
                             H5Kind::kDataspace, name);
  H5Handle ds = FF_H5_OWN(H5Dcreate2(file, name.c_str(), H5T_IEEE_F32LE, space.get(), H5P_DEFAULT,
                                     H5P_DEFAULT, H5P_DEFAULT),
                          H5Kind::kDataset, name);
  if (!values.empty())
    FF_H5_CHECK(H5Dwrite(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()),
                name);
}

inline void writeRawInt64(hid_t file, const std::string& name, const std::vector<hsize_t>& dims,
                          const std::vector<int64_t>& values) {
  H5Handle space = FF_H5_OWN(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
                             H5Kind::kDataspace, name);
  H5Handle ds = FF_H5_OWN(H5Dcreate2(file, name.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT,
                                     H5P_DEFAULT, H5P_DEFAULT),
                          H5Kind::kDataset, name);
  FF_H5_CHECK(H5Dwrite(ds.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()),
              name);
}

// A chunked float dataset of any declared shape and no data written: HDF5 stores it in a
// few hundred bytes whatever the shape (reads would return the fill value, 0).
inline void writeDeclaredFloat(hid_t file, const std::string& name,
                               const std::vector<hsize_t>& dims) {
  std::vector<hsize_t> chunk(dims.size(), 1);
  chunk.back() = dims.back();
  H5Handle space = FF_H5_OWN(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
                             H5Kind::kDataspace, name);
  H5Handle dcpl = FF_H5_OWN(H5Pcreate(H5P_DATASET_CREATE), H5Kind::kPropList, name);
  FF_H5_CHECK(H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()), name);
  H5Handle ds = FF_H5_OWN(H5Dcreate2(file, name.c_str(), H5T_IEEE_F32LE, space.get(), H5P_DEFAULT,
                                     dcpl.get(), H5P_DEFAULT),
                          H5Kind::kDataset, name);
}

// A small valid jets-layout file.
inline void writeGoodJets(const std::string& path, int64_t n = 12, int64_t P = 16) {
  SynthConfig cfg = SynthConfig::pretrainDefaults();
  cfg.P = P;
  writeJetFile(path, synthPretrain(cfg, 1, 0, n));
}

// kind: "missing_key", "wrong_shape", "nan", "empty", "inconsistent_n", "truncated",
//       "zero_particles" (data (N,0,13)), "zero_features" (data (N,P,0)),
//       "overflow" (declared (2^40, 2^20, 13): its byte size overflows 64 bits),
//       "huge" (declared (2^30, 128, 13), 6.5 TiB, never written), "label_range" (pid 5000),
//       "negative_label", "onehot_empty" (a one-hot pid row of zeros), "nan_weights",
//       "zero_weights" (every weight 0), "huge_weights" (valid pretraining jets whose finite
//       weights, 3e38 each, overflow any weighted sum: training on them diverges)
inline void writeBad(const std::string& path, const std::string& kind) {
  const int64_t n = 8, P = 10;
  if (kind == "huge_weights") {
    SynthConfig cfg = SynthConfig::pretrainDefaults();
    cfg.P = 32;
    JetArrays jets = synthPretrain(cfg, 1, 0, 64);
    jets.weights.assign(static_cast<size_t>(jets.n), 3e38f);
    writeJetFile(path, jets);
    return;
  }
  if (kind == "truncated") {
    writeGoodJets(path + ".full", 64, 32);
    std::ifstream in(path + ".full", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::remove((path + ".full").c_str());
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
    return;
  }
  H5Handle f = h5Create(path);
  std::vector<float> data(static_cast<size_t>(n * P * 13), 0.0f),
      jet(static_cast<size_t>(n * 4), 1.0f);
  for (int64_t i = 0; i < n; ++i) data[static_cast<size_t>(i * P * 13 + 2)] = -0.5f;
  if (kind == "missing_key") {
    writeRawFloat(f.get(), "data", {hsize_t(n), hsize_t(P), 13}, data);
  } else if (kind == "wrong_shape") {
    writeRawFloat(f.get(), "data", {hsize_t(n), hsize_t(P), 13}, data);
    writeRawFloat(f.get(), "jet", {hsize_t(n), 3},
                  std::vector<float>(static_cast<size_t>(n * 3), 1.0f));
  } else if (kind == "nan") {
    data[static_cast<size_t>(5 * P * 13 + 3)] = std::nanf("");
    writeRawFloat(f.get(), "data", {hsize_t(n), hsize_t(P), 13}, data);
    writeRawFloat(f.get(), "jet", {hsize_t(n), 4}, jet);
  } else if (kind == "empty") {
    writeRawFloat(f.get(), "data", {0, hsize_t(P), 13}, {});
    writeRawFloat(f.get(), "jet", {0, 4}, {});
  } else if (kind == "zero_particles") {
    writeRawFloat(f.get(), "data", {hsize_t(n), 0, 13}, {});
    writeRawFloat(f.get(), "jet", {hsize_t(n), 4}, jet);
  } else if (kind == "zero_features") {
    writeRawFloat(f.get(), "data", {hsize_t(n), hsize_t(P), 0}, {});
    writeRawFloat(f.get(), "jet", {hsize_t(n), 4}, jet);
  } else if (kind == "overflow" || kind == "huge") {
    const hsize_t rows = kind == "overflow" ? hsize_t(1) << 40 : hsize_t(1) << 30;
    writeDeclaredFloat(f.get(), "data", {rows, kind == "overflow" ? hsize_t(1) << 20 : 128, 13});
    writeDeclaredFloat(f.get(), "jet", {rows, 4});
  } else if (kind == "label_range" || kind == "negative_label") {
    writeRawFloat(f.get(), "data", {hsize_t(n), hsize_t(P), 13}, data);
    writeRawFloat(f.get(), "jet", {hsize_t(n), 4}, jet);
    std::vector<int64_t> pid(static_cast<size_t>(n), 1);
    pid[3] = kind == "label_range" ? 5000 : -1;
    writeRawInt64(f.get(), "pid", {hsize_t(n)}, pid);
  } else if (kind == "onehot_empty") {
    writeRawFloat(f.get(), "data", {hsize_t(n), hsize_t(P), 13}, data);
    writeRawFloat(f.get(), "jet", {hsize_t(n), 4}, jet);
    std::vector<float> pid(static_cast<size_t>(n * 3), 0.0f);
    for (int64_t i = 0; i < n; ++i)
      if (i != 6) pid[static_cast<size_t>(i * 3 + i % 3)] = 1.0f;
    writeRawFloat(f.get(), "pid", {hsize_t(n), 3}, pid);
  } else if (kind == "nan_weights" || kind == "zero_weights") {
    writeRawFloat(f.get(), "data", {hsize_t(n), hsize_t(P), 13}, data);
    writeRawFloat(f.get(), "jet", {hsize_t(n), 4}, jet);
    std::vector<float> w(static_cast<size_t>(n), kind == "nan_weights" ? 1.0f : 0.0f);
    if (kind == "nan_weights") w[2] = std::nanf("");
    writeRawFloat(f.get(), "weights", {hsize_t(n)}, w);
  } else if (kind == "inconsistent_n") {
    writeRawFloat(f.get(), "data", {hsize_t(n), hsize_t(P), 13}, data);
    writeRawFloat(f.get(), "jet", {hsize_t(n - 1), 4},
                  std::vector<float>(static_cast<size_t>((n - 1) * 4), 1.0f));
  }
  f.close(path);
}

}  // namespace foldfarm::data::badfiles
