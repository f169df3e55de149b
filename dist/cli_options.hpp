#pragma once
// Command-line options of data-parallel commands (header-only: CLI11 stays in the app).
//   --collective-timeout S, --dist-backend NAME, --bucket-cap-mb MB
// override FOLDFARM_COLLECTIVE_TIMEOUT, FOLDFARM_DIST_BACKEND, FOLDFARM_BUCKET_CAP_MB.
#include <c10/core/Device.h>
#include <CLI/CLI.hpp>

#include <cstddef>
#include <string>

#include "core/base/cli_checks.hpp"
#include "core/base/error.hpp"
#include "dist/launch.hpp"
#include "dist/make_context.hpp"

namespace foldfarm::dist {

class DistCli {
 public:
  void addTo(CLI::App& app) {
    timeout_ = app.add_option("--collective-timeout", timeout_s_,
                              "Seconds a collective may take before every rank that can still "
                              "act stops with exit code 3 naming the late ranks (env "
                              "FOLDFARM_COLLECTIVE_TIMEOUT; default 600; inf: never)")
                   ->check(cli::kPositiveOrInfinite);
    backend_ =
        app.add_option("--dist-backend", backend_name_,
                       "Data-parallel backend: auto, nccl or mpi (env FOLDFARM_DIST_BACKEND)");
    cap_ = app.add_option("--bucket-cap-mb", cap_mb_,
                          "Gradient bucket cap in MiB (first bucket 1 MiB; env "
                          "FOLDFARM_BUCKET_CAP_MB; default 25; at most 1e6)")
               ->check(cli::kPositive)
               ->check(cli::between(0, kMaxBucketCapMb));
  }
  // The options given on the command line, else the environment's (a variable beside a given
  // option is not read: a malformed one is no error then).
  DistOptions resolve() const {
    DistOverrides overrides;
    if (timeout_ != nullptr && timeout_->count() > 0) overrides.collective_timeout_s = timeout_s_;
    const bool given = backend_ != nullptr && backend_->count() > 0;
    if (given) overrides.backend = backend_name_;
    if (cap_ != nullptr && cap_->count() > 0) overrides.bucket_cap_mb = cap_mb_;
    DistOptions o = distOptionsFromEnv(overrides);
    // Refused here, alone as under mpirun (it was taken by a single process, and named only
    // when the ranks met).
    if (o.backend != "auto" && o.backend != "mpi" && o.backend != "nccl")
      throw InputError((given ? "--dist-backend " : "FOLDFARM_DIST_BACKEND=") + o.backend +
                       ": not a data-parallel backend; use auto, mpi or nccl");
    return o;
  }
  // For a trainer on `device` and for one whose tensors stay in host memory
  // (make_context.hpp's resolveForTraining, resolveForCpuTraining of these options).
  DistOptions resolveForTraining(const std::string& command, const c10::Device& device) const {
    return dist::resolveForTraining(resolve(), command, device);
  }
  DistOptions resolveForCpuTraining(const std::string& command) const {
    return dist::resolveForCpuTraining(resolve(), command);
  }

 private:
  double timeout_s_ = 600.0;
  std::string backend_name_ = "auto";
  double cap_mb_ = 25.0;
  CLI::Option* timeout_ = nullptr;
  CLI::Option* backend_ = nullptr;
  CLI::Option* cap_ = nullptr;
};

}  // namespace foldfarm::dist
