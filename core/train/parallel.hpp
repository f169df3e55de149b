#pragma once
// The seam between the single-process trainer (core) and data-parallel training (dist).
// The trainer calls these at fixed points of every step; a single process uses
// SingleProcessContext (everything local), dist/ provides the MPI and NCCL versions.
//
// Collective contract: every method marked (collective) must be called by all ranks, in the
// same order, the same number of times.
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/output_lock.hpp"

namespace torch::nn {
class Module;
}

namespace foldfarm {

class FlatParameters;

class ParallelContext {
 public:
  virtual ~ParallelContext() = default;
  virtual int rank() const = 0;
  virtual int worldSize() const = 0;
  bool isRoot() const { return rank() == 0; }

  // (collective) Once per model, after it is built and before its optimiser is created:
  // broadcast parameters and buffers from rank 0 and install gradient hooks. Preparing a
  // new model (the next step of an OmniFold chain) releases the previous one's buckets.
  // With `flat` (the model's parameters moved into one buffer, core/train/flat_params.hpp)
  // the gradient all-reduce works on slices of its gradient buffer: no bucket copies.
  virtual void prepare(torch::nn::Module& model, const FlatParameters* flat = nullptr) = 0;
  // Gradient accumulation: while false, backward passes do not communicate.
  virtual void setGradientSync(bool enabled) = 0;
  // (collective) After loss.backward(): returns once every gradient holds the mean over
  // ranks. Overlapping implementations only wait for their outstanding reductions here.
  virtual void finishGradientSync() = 0;
  // (collective) Element-wise mean of `values` over ranks, in place (metrics).
  virtual void allreduceMean(std::vector<double>& values) = 0;
  // (collective) Element-wise sum over ranks, in place (counts).
  virtual void allreduceSum(std::vector<double>& values) = 0;
  // (collective) True on every rank if any rank passes true (stop/preemption agreement).
  virtual bool anyTrue(bool local) = 0;
  virtual void barrier() = 0;
};

// (collective) Every rank's `local` value, indexed by rank, on every rank. Built on
// allreduceSum, so it is exact for integers up to 2^53 (counts, 16-bit hash pieces).
inline std::vector<double> allGather(ParallelContext& ctx, double local) {
  std::vector<double> v(static_cast<size_t>(ctx.worldSize()), 0.0);
  v[static_cast<size_t>(ctx.rank())] = local;
  ctx.allreduceSum(v);
  return v;
}

// (collective) The output directory `dir` made and locked by rank 0, the rank that writes
// it (core/base/output_lock.hpp), with the temporaries an earlier run killed while writing
// left in it and in `subdirs` removed. When rank 0 cannot take it every rank throws (none
// goes on alone into a collective): rank 0 its error, the others ReportedByRankZero.
inline std::unique_ptr<OutputDirectoryLock> lockOutputOnRoot(
    ParallelContext& ctx, const std::string& dir, const std::string& option,
    const std::vector<std::string>& subdirs) {
  std::unique_ptr<OutputDirectoryLock> lock;
  std::exception_ptr failed;
  int failed_code = 0;
  if (ctx.rank() == 0) {
    try {
      lock = std::make_unique<OutputDirectoryLock>(dir, option);
      lock->removeLeftTemporaries(subdirs);
    } catch (const Error& e) {
      lock.reset();
      failed = std::current_exception();
      failed_code = e.exitCode();
    }
  }
  std::vector<double> code{static_cast<double>(failed_code)};
  if (ctx.worldSize() > 1) ctx.allreduceSum(code);
  if (code[0] != 0) {
    if (failed) std::rethrow_exception(failed);
    throw ReportedByRankZero(static_cast<int>(code[0]));
  }
  return lock;
}

class SingleProcessContext final : public ParallelContext {
 public:
  int rank() const override { return 0; }
  int worldSize() const override { return 1; }
  void prepare(torch::nn::Module&, const FlatParameters* = nullptr) override {}
  void setGradientSync(bool) override {}
  void finishGradientSync() override {}
  void allreduceMean(std::vector<double>&) override {}
  void allreduceSum(std::vector<double>&) override {}
  bool anyTrue(bool local) override { return local; }
  void barrier() override {}
};

}  // namespace foldfarm
