#pragma once
// Which device a process trains on: `--device cpu|cuda|auto` of every training command and
// the `device` key of a chain's configuration.
//   cpu   the CPU, always.
//   cuda  this process's GPU, or an InputError saying why there is none (LibTorch built
//         without CUDA; no GPU visible, e.g. CUDA_VISIBLE_DEVICES empty).
//   auto  this process's GPU when LibTorch has CUDA and one is visible, else the CPU.
// "This process's GPU" is local rank modulo the visible GPUs: a campaign slot sets
// CUDA_VISIBLE_DEVICES to its one GPU (which CUDA then numbers 0); ranks started by mpirun or
// srun on a node where all GPUs are visible take one each, as the NCCL backend does
// (dist/nccl_communicator.cpp), so a rank's model and its communicator share a device.
//
// resolveDevice is a pure function of DeviceFacts (tests give it any facts); selectDevice
// probes this process and logs the choice with its reason.
#include <ATen/core/Generator.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace foldfarm {

enum class DeviceRequest { kCpu, kCuda, kAuto };

// "cpu", "cuda" or "auto"; anything else is an InputError naming `where` (an option or key).
DeviceRequest parseDeviceRequest(const std::string& text, const std::string& where);
const char* deviceRequestName(DeviceRequest r);

struct DeviceFacts {
  bool torch_cuda = false;  // this LibTorch can run CUDA (its CUDA library is loaded)
  int visible_gpus = 0;     // GPUs CUDA sees (after CUDA_VISIBLE_DEVICES)
  int local_rank = 0;       // this process's index among the ranks of its node
  bool cvd_set = false;     // CUDA_VISIBLE_DEVICES is set
  std::string cuda_visible_devices;
};

struct DeviceChoice {
  torch::Device device{torch::kCPU};
  DeviceRequest request = DeviceRequest::kAuto;
  std::string reason;    // why this device, one phrase
  std::string physical;  // the CUDA_VISIBLE_DEVICES entry of the GPU taken ("" unknown/CPU)
  bool isCuda() const { return device.is_cuda(); }
  std::string describe() const;  // "cuda:0 (GPU 3 of CUDA_VISIBLE_DEVICES=3; auto)"
  nlohmann::json toJson() const;
};

// Throws InputError for kCuda when no GPU can be used, saying why and what to do.
DeviceChoice resolveDevice(DeviceRequest request, const DeviceFacts& facts);

// True when this LibTorch was built with CUDA (whether or not a GPU is present).
bool torchHasCuda();
// This process's facts; local_rank < 0 takes the launcher's (dist::detectLaunch: Open MPI,
// MPICH/Intel MPI, a Slurm step; 0 for a process started alone).
DeviceFacts probeDeviceFacts(int local_rank = -1);
// probe + resolve + log ("device: cuda:0 (...)" at info level, with the rank/task prefix of
// the log). With a GPU it also applies the process settings: TF32 for float32 matrix
// products and convolutions when `allow_tf32`, and FOLDFARM_GPU_MEMORY_FRACTION (set by a
// campaign slot that shares its GPU, jobs/slots.hpp) as the allocator's cap.
DeviceChoice selectDevice(const std::string& request, int local_rank = -1, bool allow_tf32 = true);

// Bytes of GPU memory in use on `device` (cudaMemGetInfo: total - free, this process's
// allocator pool included); 0 on the CPU or in a build without the CUDA runtime.
int64_t deviceMemoryInUse(const torch::Device& device);

// The caching allocator's peak on a GPU since resetDeviceMemoryPeak (which also returns its
// cached blocks to the driver, so that one measurement does not inherit the last one's
// pool): bytes allocated to tensors, and bytes reserved from the driver. 0 on the CPU.
struct DeviceMemoryPeak {
  int64_t allocated = 0;
  int64_t reserved = 0;
};
void resetDeviceMemoryPeak(const torch::Device& device);
DeviceMemoryPeak deviceMemoryPeak(const torch::Device& device);

// The current stream of this thread, for a scope, becomes a stream of `device`'s pool, so
// that work issued from several host threads (models trained side by side in one process)
// can overlap on one GPU. `slot` >= 0: the same stream for every scope of that slot (the
// caching allocator keeps its blocks per stream: a new stream for the timed steps would pay
// fresh allocations in them); -1: the pool's next. Nothing on the CPU.
class StreamScope {
 public:
  explicit StreamScope(const torch::Device& device, int slot = -1);
  ~StreamScope();
  StreamScope(const StreamScope&) = delete;
  StreamScope& operator=(const StreamScope&) = delete;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A random generator of its own for `device`, seeded with `seed`: a new CUDA generator on a
// GPU (not the process's default one, which models trained side by side would share), a
// CPU generator otherwise.
at::Generator newGenerator(const torch::Device& device, uint64_t seed);

// Refuses a training precision that cannot run on `device` before anything is trained or
// written: InputError "<who>: ..." for a precision other than fp32 and bf16, and for bf16
// off a CUDA device or on a LibTorch without per-device autocast (1.x).
void requirePrecision(const std::string& precision, const torch::Device& device,
                      const std::string& who);

// bfloat16 autocast of a device type's operations for a scope (the forward pass and the
// loss), with float32 master weights: what torch.autocast("cuda", torch.bfloat16) does for
// CUDA. `device_type` is the model's: CUDA in training (requirePrecision refuses bf16
// elsewhere), CPU in tests, where LibTorch 2.x's CPU autocast runs the same step's dtype flow
// without a GPU. A no-op when `on` is false. Throws InputError when on and this LibTorch
// (1.x) lacks the per-device autocast interface. `cache` false: no cache of casted weights
// (a CUDA graph capture, whose casts must be part of the graph).
class Bf16Autocast {
 public:
  Bf16Autocast(bool on, c10::DeviceType device_type, bool cache = true);
  ~Bf16Autocast();
  Bf16Autocast(const Bf16Autocast&) = delete;
  Bf16Autocast& operator=(const Bf16Autocast&) = delete;

 private:
  bool on_ = false;
  c10::DeviceType type_ = c10::DeviceType::CUDA;
  bool was_enabled_ = false;
  bool was_cache_ = true;
  c10::ScalarType was_dtype_ = c10::ScalarType::Half;
};

}  // namespace foldfarm
