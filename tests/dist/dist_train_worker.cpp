// A small data-parallel training program for the fault tests: the same loop a trainer
// runs (stop agreement, bucketed gradient sync, checkpoint by rank 0, resume), with
// faults injected on purpose:
//   dist_train_worker --dir D --steps S [--resume] [--kill-rank R --kill-step K]
//                     [--hang-rank R --hang-step K] [--signal-rank R --signal-step K]
//                     [--fail-rank R --fail-step K [--unwrapped]]
// (--fail-*: rank R throws an InputError at step K, an error no other rank meets;
// --unwrapped: the loop runs without leaveOnError, as code that does not tell the others.)
// Global batch 32 split over the ranks; each rank writes D/result.<rank> = "<exit> <msg>",
// rank 0 writes D/ckpt.pt on a stop and D/final.pt at the end.
#include <torch/torch.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/stop_signal.hpp"
#include "dist/make_context.hpp"

using namespace foldfarm;

namespace {

constexpr int kGlobalBatch = 32;

struct NetImpl : torch::nn::Module {
  NetImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(8, 64));
    fc2 = register_module("fc2", torch::nn::Linear(64, 1));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::tanh(fc1(x))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Net);

struct Args {
  std::string dir;
  int steps = 20;
  bool resume = false;
  int kill_rank = -1, kill_step = -1, hang_rank = -1, hang_step = -1;
  int signal_rank = -1, signal_step = -1;
  int fail_rank = -1, fail_step = -1;
  bool unwrapped = false;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw InputError("missing value after " + k);
      return argv[++i];
    };
    if (k == "--dir")
      a.dir = next();
    else if (k == "--steps")
      a.steps = std::stoi(next());
    else if (k == "--resume")
      a.resume = true;
    else if (k == "--kill-rank")
      a.kill_rank = std::stoi(next());
    else if (k == "--kill-step")
      a.kill_step = std::stoi(next());
    else if (k == "--hang-rank")
      a.hang_rank = std::stoi(next());
    else if (k == "--hang-step")
      a.hang_step = std::stoi(next());
    else if (k == "--signal-rank")
      a.signal_rank = std::stoi(next());
    else if (k == "--signal-step")
      a.signal_step = std::stoi(next());
    else if (k == "--fail-rank")
      a.fail_rank = std::stoi(next());
    else if (k == "--fail-step")
      a.fail_step = std::stoi(next());
    else if (k == "--unwrapped")
      a.unwrapped = true;
    else
      throw InputError("unknown argument " + k);
  }
  if (a.dir.empty()) throw InputError("--dir is required");
  return a;
}

void saveState(const std::string& path, Net& net, torch::optim::Optimizer* opt, int step) {
  torch::serialize::OutputArchive ar;
  net->save(ar);
  if (opt != nullptr) {
    torch::serialize::OutputArchive o;
    opt->save(o);
    ar.write("optimizer", o);
  }
  ar.write("step", torch::tensor(static_cast<int64_t>(step)));
  AtomicFile f(path);
  ar.save_to(f.tempPath());
  f.commit();
}

void writeResult(const Args& a, int rank, int code, const std::string& msg) {
  std::ofstream(a.dir + "/result." + std::to_string(rank)) << code << " " << msg << "\n";
}

int run(const Args& a, int* rank_out) {
  // CPU tensors: the MPI backend, also on a machine with a GPU (FOLDFARM_DIST_BACKEND wins).
  dist::DistOptions dist_options = dist::distOptionsFromEnv();
  if (std::getenv("FOLDFARM_DIST_BACKEND") == nullptr) dist_options.backend = "mpi";
  auto ctx = dist::makeParallelContext(dist_options);
  const int rank = ctx->rank(), world = ctx->worldSize();
  *rank_out = rank;
  // As the commands do: an error only this rank meets ends the others at once.
  const auto body = [&] {
    if (kGlobalBatch % world != 0) throw InputError("world size must divide 32");
    torch::manual_seed(11);
    Net net;
    int start = 0;
    torch::serialize::InputArchive in;
    const std::string ckpt = a.dir + "/ckpt.pt";
    if (a.resume) {
      in.load_from(ckpt);
      net->load(in);
      torch::Tensor s;
      in.read("step", s);
      start = static_cast<int>(s.item<int64_t>());
    }
    ctx->prepare(*net);
    torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(3e-2));
    if (a.resume) {
      torch::serialize::InputArchive o;
      in.read("optimizer", o);
      opt.load(o);
    }
    const int per_rank = kGlobalBatch / world;
    for (int step = start; step < a.steps; ++step) {
      if (ctx->anyTrue(stopRequested())) {
        if (ctx->isRoot()) saveState(ckpt, net, &opt, step);
        ctx->barrier();
        throw InterruptedError("stopped at step " + std::to_string(step) + "; rerun with --resume");
      }
      if (rank == a.kill_rank && step == a.kill_step) std::raise(SIGKILL);
      if (rank == a.hang_rank && step == a.hang_step) std::raise(SIGSTOP);  // a stalled rank
      if (rank == a.fail_rank && step == a.fail_step)
        throw InputError("rank " + std::to_string(rank) + " met a bad input at step " +
                         std::to_string(step));
      torch::Generator g = at::detail::createCPUGenerator(500 + step);
      torch::Tensor x = at::randn({kGlobalBatch, 8}, g).narrow(0, rank * per_rank, per_rank);
      torch::Tensor y = x.sum(1, true).sin();
      opt.zero_grad();
      torch::mse_loss(net->forward(x), y).backward();
      ctx->finishGradientSync();
      opt.step();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      if (rank == a.signal_rank && step == a.signal_step) std::raise(SIGUSR1);
    }
    if (ctx->isRoot()) saveState(a.dir + "/final.pt", net, nullptr, a.steps);
    ctx->barrier();
  };
  if (a.unwrapped)
    body();
  else
    leaveOnError(*ctx, body);
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  initLogging("info");
  installStopHandlers();
  int rank = 0;
  Args a;
  try {
    a = parse(argc, argv);
    const int code = run(a, &rank);
    writeResult(a, rank, code, "ok");
    return code;
  } catch (const Error& e) {
    std::fprintf(stderr, "dist_train_worker: error: %s\n", e.what());
    if (!a.dir.empty()) writeResult(a, rank, e.exitCode(), e.what());
    return e.exitCode();
  }
}
