#include "dist/data_parallel.hpp"

#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include <fmt/format.h>

#include "core/base/error.hpp"
#include "core/base/hash.hpp"
#include "core/base/log.hpp"
#include "core/mpi/check.hpp"
#include "core/train/flat_params.hpp"
#include "dist/backend_registry.hpp"
#include "dist/communicator.hpp"
#include "dist/control_plane.hpp"

namespace foldfarm::dist {
namespace {

double envDouble(const char* name, double fallback, double max) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const double x = std::strtod(v, &end);
  if (end == v || *end != '\0' || !(x > 0) || x > max) {
    throw InputError(std::string("environment variable ") + name + "='" + v +
                     "' must be a positive number" +
                     (std::isinf(max) ? std::string() : fmt::format(" up to {:g}", max)));
  }
  return x;
}

}  // namespace

DistOptions distOptionsFromEnv(const DistOverrides& given) {
  DistOptions o;
  o.collective_timeout_s = given.collective_timeout_s
                               ? *given.collective_timeout_s
                               : envDouble("FOLDFARM_COLLECTIVE_TIMEOUT", o.collective_timeout_s,
                                           std::numeric_limits<double>::infinity());
  if (given.backend) {
    o.backend = *given.backend;
  } else if (const char* b = std::getenv("FOLDFARM_DIST_BACKEND"); b != nullptr && *b != '\0') {
    o.backend = b;
  }
  const double cap_mb = given.bucket_cap_mb
                            ? *given.bucket_cap_mb
                            : envDouble("FOLDFARM_BUCKET_CAP_MB", 25.0, kMaxBucketCapMb);
  o.buckets.bucket_cap_bytes = static_cast<std::size_t>(cap_mb * 1024.0 * 1024.0);
  return o;
}

DistOptions resolveForTraining(DistOptions o, const std::string& command,
                               const c10::Device& device) {
  if (!device.is_cuda()) return resolveForCpuTraining(std::move(o), command);
  if (!detectLaunch().distributed()) return o;  // one process: no data plane
  if (o.backend == "mpi")
    throw InputError(command + ": --dist-backend mpi reduces host tensors and this run trains on " +
                     device.str() + "; use --dist-backend nccl (or auto), or --device cpu");
#ifndef FOLDFARM_HAVE_NCCL
  throw InputError(command + ": training on " + device.str() +
                   " over several ranks needs the NCCL backend, which this build lacks "
                   "(configure with NCCL: -DNCCL_HOME=PREFIX); or use --device cpu");
#endif
  if (o.backend == "auto") o.backend = "nccl";
  return o;
}

DistOptions resolveForCpuTraining(DistOptions o, const std::string& command) {
  if (o.backend == "nccl")
    throw InputError(command +
                     ": --dist-backend nccl: this command trains in host memory (CPU "
                     "tensors); use --dist-backend mpi or auto (bench ddp trains on the GPU)");
  if (o.backend == "auto") o.backend = "mpi";
  return o;
}

std::unique_ptr<ParallelContext> makeParallelContext(const DistOptions& options) {
  const LaunchInfo launch = detectLaunch();
  if (!launch.distributed()) {
    if (options.backend != "auto" && options.backend != "mpi") {
      logWarn("--dist-backend {} ignored: not launched by mpirun/srun, training alone",
              options.backend);
    }
    return std::make_unique<SingleProcessContext>();
  }
  setLogRank(launch.rank);
  setErrorRank(launch.rank);
  return std::make_unique<DataParallelContext>(launch, options);
}

DataParallelContext::DataParallelContext(const LaunchInfo& launch, const DistOptions& options)
    : launch_(launch), options_(options) {
  control_ = std::make_unique<ControlPlane>(options.collective_timeout_s);
  if (control_->rank() != launch.rank || control_->worldSize() != launch.world_size) {
    logWarn("launcher says rank {} of {}, MPI says rank {} of {}; using MPI's", launch.rank,
            launch.world_size, control_->rank(), control_->worldSize());
    launch_.rank = control_->rank();
    launch_.world_size = control_->worldSize();
  }
  setLogRank(control_->rank());
  logInfo("launched by {}: rank {} of {} (local rank {} of {}) on {}",
          launcherName(launch.launcher), launch.rank, launch.world_size, launch.local_rank,
          launch.local_size, launch.host);
  comm_ = createCommunicator(options.backend, *control_, launch_);
}

DataParallelContext::~DataParallelContext() {
  // Hooks hold weak references: the model may outlive this context.
  buckets_.reset();
  comm_.reset();
  control_.reset();
}

int DataParallelContext::rank() const {
  return control_->rank();
}
int DataParallelContext::worldSize() const {
  return control_->worldSize();
}
c10::Device DataParallelContext::device() const {
  return comm_->device();
}
const char* DataParallelContext::backendName() const {
  return comm_->backendName();
}

void DataParallelContext::prepare(torch::nn::Module& model, const FlatParameters* flat) {
  if (buckets_) {
    // A new model (the next step of a chain): the previous model's hooks hold weak
    // references to the old buckets and turn into no-ops once these are released. Nothing
    // is in flight: the trainer finished every pass before the optimiser step.
    buckets_.reset();
  }
  torch::NoGradGuard no_grad;
  // Rank 0's initial state everywhere: parameters and buffers (running statistics).
  std::vector<at::Tensor> state;
  for (const auto& p : model.parameters(/*recurse=*/true)) state.push_back(p);
  for (const auto& b : model.buffers(/*recurse=*/true)) state.push_back(b);
  std::vector<at::Tensor> staging;
  std::vector<std::unique_ptr<CollectiveWork>> works;
  control_->announce("broadcast of " + std::to_string(state.size()) +
                     " parameters and buffers from rank 0");
  for (const at::Tensor& t : state) {
    staging.push_back(t.is_contiguous() ? t : t.contiguous());
    works.push_back(comm_->broadcast(staging.back(), 0));
  }
  control_->waitUntil(
      [&] {
        for (auto& w : works) {
          if (!w->test()) return false;
        }
        return true;
      },
      [&] { comm_->abort("parameter broadcast did not complete"); });
  for (size_t i = 0; i < state.size(); ++i) {
    if (!staging[i].is_same(state[i])) state[i].copy_(staging[i]);
  }

  std::vector<at::Tensor> trainable;
  for (const auto& p : model.parameters(/*recurse=*/true)) {
    if (p.requires_grad()) trainable.push_back(p);
  }
  // Flat parameters: the buckets are slices of their gradient buffer.
  at::Tensor flat_grad;
  std::vector<std::int64_t> flat_offsets;
  if (flat != nullptr) {
    for (const at::Tensor& p : trainable) {
      const std::int64_t k = flat->positionOf(p);
      if (k < 0) {
        flat_offsets.clear();
        break;
      }
      flat_offsets.push_back(flat->offsets()[static_cast<std::size_t>(k)]);
    }
    if (flat_offsets.size() == trainable.size()) flat_grad = flat->grads();
  }
  buckets_ = BucketedAllreduce::create(*comm_, *control_, std::move(trainable), options_.buckets,
                                       flat_grad, std::move(flat_offsets));
  buckets_->installHooks();
  buckets_->setEnabled(sync_enabled_);
  const std::vector<std::size_t> sizes = buckets_->bucketBytes();
  std::size_t total = 0;
  for (std::size_t s : sizes) total += s;
  logInfo("data-parallel: {} ranks, {} gradient bytes in {} buckets (first {} B)", worldSize(),
          total, sizes.size(), sizes.empty() ? 0 : sizes.front());
}

void DataParallelContext::setGradientSync(bool enabled) {
  sync_enabled_ = enabled;
  if (buckets_) buckets_->setEnabled(enabled);
}

void DataParallelContext::finishGradientSync() {
  if (!buckets_) throw Error("finishGradientSync() before prepare()");
  buckets_->finish();
}

SyncTiming DataParallelContext::lastSync() const {
  return buckets_ ? buckets_->lastTiming() : SyncTiming{};
}

void DataParallelContext::allreduceMean(std::vector<double>& values) {
  control_->allreduceSum(values);
  for (double& v : values) v /= static_cast<double>(worldSize());
}

void DataParallelContext::allreduceSum(std::vector<double>& values) {
  control_->allreduceSum(values);
}

unsigned DataParallelContext::anyOf(unsigned local) {
  return control_->anyOf(local);
}
void DataParallelContext::barrier() {
  control_->barrier();
}
void DataParallelContext::leave(int exit_code, const std::string& why) noexcept {
  control_->leave(exit_code, why);
}

std::uint64_t hashModuleState(torch::nn::Module& model) {
  std::uint64_t h = kFnv1aOffset;
  auto mix = [&](const at::Tensor& t) {
    const at::Tensor c = t.detach().to(at::kCPU).contiguous();
    h = fnv1a(c.data_ptr(), static_cast<std::size_t>(c.numel() * c.element_size()), h);
  };
  for (const auto& p : model.parameters(true)) mix(p);
  for (const auto& b : model.buffers(true)) mix(b);
  return h;
}

std::uint64_t DataParallelContext::verifyParametersIdentical(torch::nn::Module& model) {
  const std::uint64_t mine = hashModuleState(model);
  const std::vector<std::uint64_t> all = control_->allgather(mine);
  std::string differ;
  for (size_t r = 1; r < all.size(); ++r) {
    if (all[r] != all[0]) differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  }
  if (!differ.empty()) {
    throw Error("model state differs from rank 0's on rank(s) " + differ +
                ": data-parallel replicas diverged (non-deterministic reduction or a rank "
                "skipped a step)");
  }
  return mine;
}

}  // namespace foldfarm::dist
