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
  // (collective) The bitwise OR over ranks of `local` (its low 8 bits): several agreements
  // in one collective (a stop, a periodic state save).
  virtual unsigned anyOf(unsigned local) = 0;
  // (collective) True on every rank if any rank passes true (stop/preemption agreement).
  bool anyTrue(bool local) { return anyOf(local ? 1u : 0u) != 0; }
  virtual void barrier() = 0;
  // This rank ends with `exit_code` because of `why` (its error line): the other ranks, when
  // they next wait for a collective this rank will not start, end at once with that code
  // instead of waiting out the collective timeout. Ranks that end together after the same
  // collective are not affected. Use leaveOnError rather than calling it.
  virtual void leave(int exit_code, const std::string& why) noexcept {
    (void)exit_code;
    (void)why;
  }
};

// (collective) Every rank's `local` value, indexed by rank, on every rank. Built on
// allreduceSum, so it is exact for integers up to 2^53 (counts, 16-bit hash pieces).
inline std::vector<double> allGather(ParallelContext& ctx, double local) {
  std::vector<double> v(static_cast<size_t>(ctx.worldSize()), 0.0);
  v[static_cast<size_t>(ctx.rank())] = local;
  ctx.allreduceSum(v);
  return v;
}

// (collective) Runs `check` on every rank, and every rank ends with an error when it fails
// on any (none goes on alone into a collective). An error of rank 0 is the one that every
// rank finds alike (an option, a config): rank 0 throws it and the others
// ReportedByAnotherRank, so N ranks print one line. When only other ranks fail (a file one
// node cannot read), each throws its own and the rest, rank 0 among them, end quietly.
// `check` itself must not call collectives.
template <class F>
void checkOnEveryRank(ParallelContext& ctx, F&& check) {
  std::exception_ptr failed;
  int code = 0;
  try {
    check();
  } catch (const Error& e) {
    failed = std::current_exception();
    code = e.exitCode();
  } catch (const std::exception&) {
    failed = std::current_exception();
    code = kExitFailure;
  }
  // [rank 0's exit code, failed ranks, the sum of their exit codes]
  std::vector<double> v{ctx.rank() == 0 ? static_cast<double>(code) : 0.0, code != 0 ? 1.0 : 0.0,
                        static_cast<double>(code)};
  if (ctx.worldSize() > 1) ctx.allreduceSum(v);
  if (v[1] == 0) return;
  if (v[0] != 0) {
    if (ctx.rank() == 0) std::rethrow_exception(failed);
    throw ReportedByAnotherRank(static_cast<int>(v[0]));
  }
  if (failed) std::rethrow_exception(failed);
  throw ReportedByAnotherRank(static_cast<int>(v[2] / v[1]));
}

// Runs this rank's part of a job: an error that escapes `work` is told to the other ranks
// (ParallelContext::leave) before it propagates, so that an error only this rank met (a file
// its node cannot read, a failed read in the middle of an epoch) ends the job at once, with
// this rank's exit code and message, rather than leaving the others waiting in their next
// collective until the collective timeout. Errors that every rank meets together
// (checkOnEveryRank, a stop) end every rank as before.
template <class F>
void leaveOnError(ParallelContext& ctx, F&& work) {
  try {
    work();
  } catch (const Error& e) {
    ctx.leave(e.exitCode(), e.what());
    throw;
  } catch (const std::exception& e) {
    ctx.leave(kExitFailure, e.what());
    throw;
  }
}

// (collective) The output directory `dir` made and locked by rank 0, the rank that writes
// it (core/base/output_lock.hpp), with the temporaries an earlier run killed while writing
// left in it and in `subdirs` removed; when rank 0 cannot take it, every rank ends
// (checkOnEveryRank: rank 0 prints why).
inline std::unique_ptr<OutputDirectoryLock> lockOutputOnRoot(
    ParallelContext& ctx, const std::string& dir, const std::string& option,
    const std::vector<std::string>& subdirs) {
  std::unique_ptr<OutputDirectoryLock> lock;
  checkOnEveryRank(ctx, [&] {
    if (ctx.rank() != 0) return;
    lock = std::make_unique<OutputDirectoryLock>(dir, option);
    lock->removeLeftTemporaries(subdirs);
  });
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
  unsigned anyOf(unsigned local) override { return local & 0xffu; }
  void barrier() override {}
};

}  // namespace foldfarm
