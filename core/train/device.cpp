#include "core/train/device.hpp"

#include <ATen/Context.h>
#include <torch/cuda.h>
#include <torch/version.h>
#if TORCH_VERSION_MAJOR >= 2
#include <ATen/autocast_mode.h>
#endif
#ifdef FOLDFARM_TORCH_CUDA
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif
#include <ATen/CPUGeneratorImpl.h>
#ifdef FOLDFARM_HAVE_CUDA_KERNELS
#include <cuda_runtime_api.h>
#endif

#include <cstdlib>
#include <map>
#include <mutex>
#include <sstream>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "dist/launch.hpp"

namespace foldfarm {

DeviceRequest parseDeviceRequest(const std::string& text, const std::string& where) {
  if (text == "cpu") return DeviceRequest::kCpu;
  if (text == "cuda" || text == "gpu") return DeviceRequest::kCuda;
  if (text == "auto") return DeviceRequest::kAuto;
  throw InputError(where + ": unknown device '" + text + "' (use cpu, cuda (or gpu) or auto)");
}

const char* deviceRequestName(DeviceRequest r) {
  switch (r) {
    case DeviceRequest::kCpu:
      return "cpu";
    case DeviceRequest::kCuda:
      return "cuda";
    case DeviceRequest::kAuto:
      return "auto";
  }
  return "auto";
}

namespace {

std::vector<std::string> splitList(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

}  // namespace

DeviceChoice resolveDevice(DeviceRequest request, const DeviceFacts& f) {
  DeviceChoice c;
  c.request = request;
  if (request == DeviceRequest::kCpu) {
    c.reason = "asked for the CPU";
    return c;
  }
  std::string why;
  if (!f.torch_cuda) {
    why = "this foldfarm's LibTorch was built without CUDA";
  } else if (f.visible_gpus <= 0) {
    why = f.cvd_set ? "no GPU is visible (CUDA_VISIBLE_DEVICES='" + f.cuda_visible_devices + "')"
                    : "no GPU is visible";
  }
  if (!why.empty()) {
    if (request == DeviceRequest::kCuda)
      throw InputError("--device cuda: " + why +
                       "; run on a GPU node, build against a CUDA LibTorch, or use --device cpu");
    c.reason = "auto: " + why;
    return c;
  }
  const int index = dist::gpuOfLocalRank(f.local_rank, f.visible_gpus);
  c.device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  if (f.cvd_set) {
    const auto list = splitList(f.cuda_visible_devices);
    if (static_cast<size_t>(index) < list.size()) c.physical = list[static_cast<size_t>(index)];
  } else {
    c.physical = std::to_string(index);
  }
  c.reason = std::string(deviceRequestName(request)) + ": local rank " +
             std::to_string(f.local_rank) + " of " + std::to_string(f.visible_gpus) +
             " visible GPU" + (f.visible_gpus == 1 ? "" : "s") +
             (f.cvd_set ? " (CUDA_VISIBLE_DEVICES=" + f.cuda_visible_devices + ")" : "");
  return c;
}

std::string DeviceChoice::describe() const {
  std::string s = device.str();
  if (!physical.empty()) s += " (GPU " + physical + ")";
  return s + "; " + reason;
}

nlohmann::json DeviceChoice::toJson() const {
  return {{"requested", deviceRequestName(request)},
          {"device", device.str()},
          {"gpu", physical.empty() ? nlohmann::json() : nlohmann::json(physical)},
          {"reason", reason}};
}

bool torchHasCuda() {
  return at::hasCUDA();
}

DeviceFacts probeDeviceFacts(int local_rank) {
  DeviceFacts f;
  f.torch_cuda = torchHasCuda();
  f.visible_gpus = f.torch_cuda ? static_cast<int>(torch::cuda::device_count()) : 0;
  // The launcher's local rank, as the NCCL backend reads it (dist/nccl_communicator.cpp), so
  // that a rank's model and its communicator take the same GPU.
  f.local_rank = local_rank >= 0 ? local_rank : dist::detectLaunch().local_rank;
  if (const char* cvd = std::getenv("CUDA_VISIBLE_DEVICES")) {
    f.cvd_set = true;
    f.cuda_visible_devices = cvd;
  }
  return f;
}

DeviceChoice selectDevice(const std::string& request, int local_rank, bool allow_tf32) {
  const DeviceChoice c =
      resolveDevice(parseDeviceRequest(request, "--device"), probeDeviceFacts(local_rank));
  if (c.isCuda()) {
#ifdef FOLDFARM_TORCH_CUDA
    // The process's current device: a CUDA call that names none (a stream, an event, an
    // allocation of an index-less device) would otherwise take GPU 0, and make a context there,
    // on a rank whose GPU is another.
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(c.device.index()));
#endif
    // TF32 for what stays float32 (matrix products, convolutions); tests that compare with
    // the CPU turn it off.
    at::globalContext().setAllowTF32CuBLAS(allow_tf32);
    at::globalContext().setAllowTF32CuDNN(allow_tf32);
    if (const char* f = std::getenv("FOLDFARM_GPU_MEMORY_FRACTION")) {
      const double fraction = std::atof(f);
      if (!(fraction > 0 && fraction <= 1))
        throw InputError("FOLDFARM_GPU_MEMORY_FRACTION='" + std::string(f) +
                         "': must be in (0, 1]");
#ifdef FOLDFARM_TORCH_CUDA
      // The caching allocator exists only once CUDA is initialised (the first CUDA tensor:
      // lazyInitCUDA); before that, setMemoryFraction asserts "Allocator not initialized for
      // device 0: did you call init?" (Python's set_per_process_memory_fraction initialises
      // first). One element on the device initialises it, on every LibTorch version.
      (void)torch::empty({1}, torch::TensorOptions().device(c.device));
      c10::cuda::CUDACachingAllocator::setMemoryFraction(fraction, c.device.index());
      logInfo("device: allocator capped at {:.0f}% of the GPU's memory (shared GPU)",
              100.0 * fraction);
#endif
    }
  }
  logInfo("device: {}", c.describe());
  return c;
}

int64_t deviceMemoryInUse(const torch::Device& device) {
#ifdef FOLDFARM_HAVE_CUDA_KERNELS
  if (!device.is_cuda()) return 0;
  size_t free_bytes = 0, total_bytes = 0;
  if (cudaSetDevice(device.index()) != cudaSuccess ||
      cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess)
    return 0;
  return static_cast<int64_t>(total_bytes - free_bytes);
#else
  (void)device;
  return 0;
#endif
}

void resetDeviceMemoryPeak(const torch::Device& device) {
#ifdef FOLDFARM_TORCH_CUDA
  if (!device.is_cuda()) return;
  c10::cuda::CUDACachingAllocator::emptyCache();
  c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
#else
  (void)device;
#endif
}

DeviceMemoryPeak deviceMemoryPeak(const torch::Device& device) {
  DeviceMemoryPeak p;
#ifdef FOLDFARM_TORCH_CUDA
  if (!device.is_cuda()) return p;
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
  p.allocated = stats.allocated_bytes[0].peak;  // StatType::AGGREGATE
  p.reserved = stats.reserved_bytes[0].peak;
#else
  (void)device;
#endif
  return p;
}

#ifdef FOLDFARM_TORCH_CUDA
namespace {
c10::cuda::CUDAStream slotStream(const torch::Device& device, int slot) {
  static std::mutex mutex;
  static std::map<std::pair<int, int>, c10::cuda::CUDAStream> streams;
  const std::lock_guard<std::mutex> lock(mutex);
  const std::pair<int, int> key{device.index(), slot};
  auto it = streams.find(key);
  if (it == streams.end())
    it =
        streams.emplace(key, c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index()))
            .first;
  return it->second;
}
}  // namespace

struct StreamScope::Impl {
  Impl(const torch::Device& device, int slot)
      : guard(slot < 0 ? c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index())
                       : slotStream(device, slot)) {}
  c10::cuda::CUDAStreamGuard guard;
};
#else
struct StreamScope::Impl {};
#endif

StreamScope::StreamScope(const torch::Device& device, int slot) {
#ifdef FOLDFARM_TORCH_CUDA
  if (device.is_cuda()) impl_ = std::make_unique<Impl>(device, slot);
#else
  (void)device;
  (void)slot;
#endif
}

StreamScope::~StreamScope() = default;

at::Generator newGenerator(const torch::Device& device, uint64_t seed) {
  at::Generator gen;
#ifdef FOLDFARM_TORCH_CUDA
  if (device.is_cuda()) gen = at::cuda::detail::createCUDAGenerator(device.index());
#endif
  if (!gen.defined()) {
    if (device.is_cuda())
      throw InputError("a CUDA generator needs a foldfarm built against a CUDA LibTorch");
    gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  }
  const std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_current_seed(seed);
  return gen;
}

void requirePrecision(const std::string& precision, const torch::Device& device,
                      const std::string& who) {
  if (precision != "fp32" && precision != "bf16")
    throw InputError(who + ": unknown precision '" + precision + "' (use fp32 or bf16)");
  if (precision != "bf16") return;
  if (!device.is_cuda())
    throw InputError(who + ": bf16 precision needs a CUDA device (--device cuda)");
#if TORCH_VERSION_MAJOR < 2
  throw InputError(who + ": bf16 precision needs LibTorch 2.x (this is " TORCH_VERSION
                         "); use --precision fp32");
#endif
}

#if TORCH_VERSION_MAJOR >= 2
namespace {

// LibTorch 2.4 made autocast's switches per device type (and deprecated the CUDA- and
// CPU-specific ones that 2.0 to 2.3 have). The device type is CUDA or CPU (the CPU's in
// tests: Bf16Autocast).
#if TORCH_VERSION_MAJOR > 2 || TORCH_VERSION_MINOR >= 4
bool autocastEnabled(c10::DeviceType type) {
  return at::autocast::is_autocast_enabled(type);
}
void setAutocastEnabled(c10::DeviceType type, bool on) {
  at::autocast::set_autocast_enabled(type, on);
}
at::ScalarType autocastDtype(c10::DeviceType type) {
  return at::autocast::get_autocast_dtype(type);
}
void setAutocastDtype(c10::DeviceType type, at::ScalarType t) {
  at::autocast::set_autocast_dtype(type, t);
}
#else
bool autocastEnabled(c10::DeviceType type) {
  return type == c10::DeviceType::CPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
}
void setAutocastEnabled(c10::DeviceType type, bool on) {
  if (type == c10::DeviceType::CPU)
    at::autocast::set_cpu_enabled(on);
  else
    at::autocast::set_enabled(on);
}
at::ScalarType autocastDtype(c10::DeviceType type) {
  return type == c10::DeviceType::CPU ? at::autocast::get_autocast_cpu_dtype()
                                      : at::autocast::get_autocast_gpu_dtype();
}
void setAutocastDtype(c10::DeviceType type, at::ScalarType t) {
  if (type == c10::DeviceType::CPU)
    at::autocast::set_autocast_cpu_dtype(t);
  else
    at::autocast::set_autocast_gpu_dtype(t);
}
#endif

}  // namespace

Bf16Autocast::Bf16Autocast(bool on, c10::DeviceType device_type, bool cache)
    : on_(on), type_(device_type) {
  if (!on_) return;
  if (type_ != c10::DeviceType::CUDA && type_ != c10::DeviceType::CPU)
    throw Error(std::string("bf16 autocast: no autocast for device type ") +
                c10::DeviceTypeName(type_));
  was_enabled_ = autocastEnabled(type_);
  was_dtype_ = autocastDtype(type_);
  was_cache_ = at::autocast::is_autocast_cache_enabled();
  at::autocast::set_autocast_cache_enabled(cache);
  setAutocastEnabled(type_, true);
  setAutocastDtype(type_, at::kBFloat16);
  at::autocast::increment_nesting();
}

Bf16Autocast::~Bf16Autocast() {
  if (!on_) return;
  // Leaving the outermost scope drops the casted weights cached for it.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  setAutocastEnabled(type_, was_enabled_);
  setAutocastDtype(type_, was_dtype_);
  at::autocast::set_autocast_cache_enabled(was_cache_);
}
#else
Bf16Autocast::Bf16Autocast(bool on, c10::DeviceType device_type, bool /*cache*/)
    : on_(on), type_(device_type) {
  if (on_)
    throw InputError("bf16 precision needs LibTorch 2.x (this is " TORCH_VERSION
                     "); use --precision fp32");
}

Bf16Autocast::~Bf16Autocast() = default;
#endif

}  // namespace foldfarm
