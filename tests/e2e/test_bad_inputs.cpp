// Malformed inputs through the real `foldfarm` commands. Every case must end with exactly
// one "foldfarm: error:" line on stderr, a non-zero exit (2 for bad input), no signal, and
// no earlier output modified (checksums of every protected file before and after).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/file_stat.hpp"
#include "core/data/h5_file.hpp"
#include "tests/data/bad_files.hpp"
#include "tests/support/resource_limits.hpp"

extern char** environ;
namespace fs = std::filesystem;
using namespace foldfarm;

namespace {

struct RunResult {
  bool signaled = false;
  int signal = 0;
  int code = -1;
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

RunResult run(const std::vector<std::string>& args, const fs::path& dir) {
  std::vector<std::string> argv = {FOLDFARM_BINARY, "--log-level", "warn"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  fs::path out = dir / "stdout.txt", err = dir / "stderr.txt";
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = 0;
  RunResult r;
  if (posix_spawn(&pid, cargv[0], &fa, nullptr, cargv.data(), environ) != 0) {
    posix_spawn_file_actions_destroy(&fa);
    r.err = "spawn failed";
    return r;
  }
  posix_spawn_file_actions_destroy(&fa);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFSIGNALED(status)) {
    r.signaled = true;
    r.signal = WTERMSIG(status);
  } else {
    r.code = WEXITSTATUS(status);
  }
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

// FNV-1a over the bytes: enough to see any modification.
uint64_t checksum(const fs::path& p) {
  std::string b = slurp(p);
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : b) h = (h ^ c) * 1099511628211ULL;
  return h ^ b.size();
}

// Every regular file below dir (outputs of earlier runs), with its checksum.
std::map<std::string, uint64_t> snapshot(const fs::path& dir) {
  std::map<std::string, uint64_t> m;
  for (auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    auto name = e.path().filename().string();
    if (name == "stdout.txt" || name == "stderr.txt") continue;
    m[e.path().string()] = checksum(e.path());
  }
  return m;
}

int countErrorLines(const std::string& err, std::string* line) {
  int n = 0;
  std::istringstream in(err);
  std::string l;
  while (std::getline(in, l)) {
    if (l.rfind("foldfarm: error:", 0) == 0) {
      ++n;
      *line = l;
    }
  }
  return n;
}

class BadInputs : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (std::string(FOLDFARM_BINARY).empty()) return;
    dir_ = fs::temp_directory_path() / ("ff_bad_inputs_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "work");
    auto d = dir_.string();
    // Valid inputs and earlier outputs made by the real commands.
    ok_ = run({"data", "synth", "--kind", "pretrain", "--jets", "120", "--seed", "3", "--particles",
               "32", "--out", d + "/good.h5"},
              dir_)
                  .code == 0 &&
          run({"data", "synth", "--kind", "unfold", "--tune", "sim", "--events", "120", "--seed",
               "4", "--out", d + "/mc.h5"},
              dir_)
                  .code == 0 &&
          run({"data", "synth", "--kind", "unfold", "--tune", "data", "--events", "120", "--seed",
               "5", "--out", d + "/data.h5"},
              dir_)
                  .code == 0 &&
          run({"data", "observables", "--in", d + "/mc.h5", "--out", d + "/existing_out.h5"}, dir_)
                  .code == 0 &&
          run({"pretrain", "--data", d + "/good.h5", "--out", d + "/ckpt", "--preset", "tiny",
               "--epochs", "1", "--threads", "1"},
              dir_)
                  .code == 0;
    // Malformed HDF5 files.
    for (const char* k :
         {"missing_key", "wrong_shape", "nan", "empty", "inconsistent_n", "truncated",
          "zero_particles", "zero_features", "overflow", "huge", "label_range", "onehot_empty",
          "nan_weights", "zero_weights", "huge_weights"})
      data::badfiles::writeBad(d + "/bad_" + k + ".h5", k);
    std::ofstream(d + "/zero_bytes.h5").close();
    std::ofstream(d + "/text.h5") << "this is not an HDF5 file\n";
    // Configs and specs.
    std::ofstream(d + "/syntax.json") << "{\"width\": 32,,}";
    std::ofstream(d + "/unknown_key.json") << "{\"wdith\": 32}";
    std::ofstream(d + "/wrong_type.json") << "{\"model\": {\"dim\": \"wide\"}}";
    std::ofstream(d + "/negative.json") << "{\"model\": {\"dim\": -4}}";
    std::ofstream(d + "/train_type.json") << "{\"train\": {\"lr\": \"fast\"}}";
    // nlohmann's get<int>() made these dim 64 and 2 epochs without a word.
    std::ofstream(d + "/wrapped_int.json") << "{\"model\": {\"dim\": 4294967360}}";
    std::ofstream(d + "/fraction_int.json") << "{\"train\": {\"epochs\": 2.5}}";
    std::ofstream(d + "/top_key.json") << "{\"model\": {}, \"optimiser\": \"lion\"}";
    std::ofstream(d + "/not_object.json") << "[1, 2, 3]";
    auto spec = [&](const std::string& name, const std::string& body) {
      std::ofstream(d + "/" + name) << body;
    };
    spec("spec_syntax.json", "{\"task\": \"noop\", ");
    spec("spec_unknown.json", "{\"task\": \"noop\", \"replicas\": 2, \"replcas\": 3}");
    spec("spec_missing_file.json",
         "{\"task\": \"chain\", \"replicas\": 2, \"inputs\": {\"mc\": \"/nonexistent/mc.h5\", "
         "\"data\": \"" +
             d + "/data.h5\", \"foundation\": \"" + d + "/ckpt\"}}");
    // Chain configs are checked at init: an unknown classifier, an unknown observable.
    const std::string chain_inputs =
        "\"inputs\": {\"mc\": \"" + d + "/mc.h5\", \"data\": \"" + d + "/data.h5\"}";
    spec("spec_chain_classifier.json", "{\"task\": \"chain\", \"replicas\": 2, " + chain_inputs +
                                           ", \"chain\": {\"config\": {\"classifier\": \"bdt\"}}}");
    spec("spec_chain_lr_factor.json", "{\"task\": \"chain\", \"replicas\": 2, " + chain_inputs +
                                          ", \"chain\": {\"config\": {\"lr_factor\": 0}}}");
    spec("spec_plan.json",
         "{\"task\": \"sleep\", \"replicas\": 4, \"params\": "
         "{\"seconds\": 1}, \"resources\": {\"gpus\": 1}}");
    spec("spec_chain_observable.json",
         "{\"task\": \"chain\", \"replicas\": 2, " + chain_inputs +
             ", \"chain\": {\"config\": {\"classifier\": \"mlp\", \"observables\": [\"tau32\"]}}}");
    // Systematic variations: a chain variation without a type, a non-closure test without
    // its pseudo-data, an up without its down.
    spec("spec_var_type.json", "{\"task\": \"chain\", \"replicas\": 2, " + chain_inputs +
                                   ", \"variations\": {\"jes\": {}}}");
    spec("spec_var_closure.json",
         "{\"task\": \"chain\", \"replicas\": 2, " + chain_inputs +
             ", \"variations\": {\"closure\": {\"type\": \"non_closure\"}}}");
    spec("spec_var_pair.json",
         "{\"task\": \"chain\", \"replicas\": 2, " + chain_inputs +
             ", \"variations\": {\"jes_up\": {\"type\": \"detector\", \"source\": "
             "\"jes\", \"direction\": \"up\", \"inputs\": {\"mc\": \"" +
             d + "/data.h5\"}}}}");
    spec("spec_zero_replicas.json", "{\"task\": \"noop\", \"replicas\": 0}");
    spec("spec_gpus.json", "{\"task\": \"noop\", \"replicas\": 2, \"resources\": {\"gpus\": 64}}");
    spec("spec_executor.json", "{\"task\": \"noop\", \"replicas\": 2, \"executor\": \"cloud\"}");
    spec("spec_kind.json", "{\"task\": \"teleport\", \"replicas\": 2}");
    spec("spec_retry.json", "{\"task\": \"noop\", \"retry\": {\"max_attempts\": -1}}");
    // Numbers a spec cannot hold, unbounded counts, parameters that would be dropped.
    spec("spec_int32.json", "{\"task\": \"noop\", \"replicas\": 4294967297}");
    spec("spec_double.json", "{\"task\": \"noop\", \"time_limit_s\": 1e400}");
    spec("spec_slots.json", "{\"task\": \"noop\", \"resources\": {\"cpu_slots\": 100000}}");
    spec("spec_param_seed.json",
         "{\"task\": \"sleep\", \"params\": {\"seconds\": 0, \"seed\": 3}}");
    spec("spec_chain_override.json", "{\"task\": \"chain\", \"replicas\": 2, " + chain_inputs +
                                         ", \"overrides\": {\"r0001m0\": {\"iterations\": 3}}}");
    spec("spec_good.json", "{\"task\": \"noop\", \"replicas\": 3}");
    ok_ = ok_ &&
          run({"campaign", "init", d + "/spec_good.json", "--dir", d + "/camp"}, dir_).code == 0;
    // Corrupt checkpoints: copies of the good one with one byte flipped / truncated.
    if (fs::exists(dir_ / "ckpt")) {
      fs::copy(dir_ / "ckpt", dir_ / "ckpt_flipped", fs::copy_options::recursive);
      fs::copy(dir_ / "ckpt", dir_ / "ckpt_truncated", fs::copy_options::recursive);
      fs::copy(dir_ / "ckpt", dir_ / "ckpt_nometa", fs::copy_options::recursive);
      for (auto& e : fs::recursive_directory_iterator(dir_ / "ckpt_flipped")) {
        if (!e.is_regular_file() || e.path().extension() == ".json") continue;
        std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
        f.seekg(static_cast<std::streamoff>(fs::file_size(e.path()) / 2));
        char c = 0;
        f.read(&c, 1);
        c = static_cast<char>(c ^ 0x5a);
        f.seekp(static_cast<std::streamoff>(fs::file_size(e.path()) / 2));
        f.write(&c, 1);
      }
      for (auto& e : fs::recursive_directory_iterator(dir_ / "ckpt_truncated")) {
        if (!e.is_regular_file() || e.path().extension() == ".json") continue;
        fs::resize_file(e.path(), fs::file_size(e.path()) / 3);
      }
      for (auto& e : fs::recursive_directory_iterator(dir_ / "ckpt_nometa")) {
        if (e.is_regular_file() && e.path().extension() == ".json") fs::remove(e.path());
      }
    }
  }
  static void TearDownTestSuite() {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  void SetUp() override {
    if (std::string(FOLDFARM_BINARY).empty()) GTEST_SKIP() << "foldfarm executable not built";
    ASSERT_TRUE(ok_) << "could not prepare valid inputs with the real commands";
  }

  // Runs one malformed case and checks the contract. `must_name` (if non-empty) must
  // appear in the error line (the file or key at fault).
  void expectCleanFailure(const std::vector<std::string>& args, const std::string& must_name,
                          int expected_code = 2) {
    auto before = snapshot(dir_);
    RunResult r = run(args, dir_ / "work");
    auto after = snapshot(dir_);
    std::string cmd;
    for (auto& a : args) cmd += a + " ";
    ++cases_;
    EXPECT_FALSE(r.signaled) << cmd << "crashed with signal " << r.signal << "\n" << r.err;
    EXPECT_NE(r.code, 0) << cmd;
    if (expected_code >= 0) {
      EXPECT_EQ(r.code, expected_code) << cmd << "\n" << r.err;
    }
    std::string line;
    EXPECT_EQ(countErrorLines(r.err, &line), 1) << cmd << "\nstderr:\n" << r.err;
    EXPECT_EQ(r.err.find("internal error"), std::string::npos) << cmd << r.err;
    EXPECT_EQ(r.err.find("terminate called"), std::string::npos) << cmd << r.err;
    if (!must_name.empty()) {
      EXPECT_NE(line.find(must_name), std::string::npos) << cmd << "\n" << line;
    }
    EXPECT_EQ(before, after) << cmd << "modified or left files behind";
  }

  std::string p(const std::string& name) const { return (dir_ / name).string(); }

  // A one-iteration chain of the observable MLP (2 epochs) on `mc` and the suite's data into
  // `out`, its config written to `config` (a name under dir_); the command's exit code.
  int runMlpChain(const std::string& mc, const std::string& config, const std::string& out) {
    std::ofstream(p(config)) << R"({"classifier": "mlp", "mlp": {"epochs": 2, "hidden": [8]}})";
    return run({"unfold", "--mc", mc, "--data", p("data.h5"), "--init", "none", "--out", out,
                "--replica", "0", "--member", "0", "--iterations", "1", "--config", p(config),
                "--threads", "1"},
               dir_)
        .code;
  }

  static fs::path dir_;
  static bool ok_;
  static int cases_;
};

fs::path BadInputs::dir_;
bool BadInputs::ok_ = false;
int BadInputs::cases_ = 0;

TEST_F(BadInputs, Hdf5Files) {
  for (const char* k :
       {"missing_key", "wrong_shape", "nan", "empty", "inconsistent_n", "truncated"}) {
    std::string f = p(std::string("bad_") + k + ".h5");
    expectCleanFailure({"data", "inspect", f}, f);
    expectCleanFailure(
        {"data", "observables", "--in", f, "--out", p("existing_out.h5"), "--overwrite"}, f);
  }
  // Refused when the file is opened: zero-width particle arrays, a shape whose byte size
  // overflows 64 bits, rows declared but never written.
  for (const char* k : {"zero_particles", "zero_features", "overflow", "huge"}) {
    std::string f = p(std::string("bad_") + k + ".h5");
    expectCleanFailure({"data", "inspect", f}, f);
  }
  // Refused when the arrays are read: labels out of range, a one-hot row with no class,
  // NaN or all-zero weights.
  for (const char* k : {"label_range", "onehot_empty", "nan_weights", "zero_weights"}) {
    std::string f = p(std::string("bad_") + k + ".h5");
    expectCleanFailure({"pretrain", "--data", f, "--out", p(std::string("pre_bad_") + k),
                        "--preset", "tiny", "--epochs", "1"},
                       f);
  }
  expectCleanFailure({"data", "inspect", p("zero_bytes.h5")}, p("zero_bytes.h5"));
  expectCleanFailure({"data", "inspect", p("text.h5")}, p("text.h5"));
  expectCleanFailure({"data", "inspect", p("no_such_file.h5")}, p("no_such_file.h5"));
  // Neither four-vectors nor jets: an unfolding file is not repacked.
  expectCleanFailure(
      {"data", "convert", "--in", p("mc.h5"), "--out", p("existing_out.h5"), "--overwrite"},
      p("mc.h5"));
  // A broken jets file is refused before anything is written.
  expectCleanFailure(
      {"data", "convert", "--in", p("bad_nan.h5"), "--out", p("existing_out.h5"), "--overwrite"},
      p("bad_nan.h5"));
  // Without --overwrite an existing file is not replaced, whatever the command (before:
  // `generate --out pre.h5` replaced a training set with 10 generated jets).
  for (const std::vector<std::string>& cmd :
       {std::vector<std::string>{"data", "synth", "--kind", "pretrain", "--jets", "8"},
        std::vector<std::string>{"data", "convert", "--in", p("good.h5")},
        std::vector<std::string>{"data", "observables", "--in", p("good.h5")},
        std::vector<std::string>{"generate", "--ckpt", p("ckpt"), "--class", "0", "--jets", "4"}}) {
    std::vector<std::string> args = cmd;
    args.insert(args.end(), {"--out", p("existing_out.h5")});
    expectCleanFailure(args, p("existing_out.h5") + ": exists; ");
  }
  // An output that is the input, by whatever path: the rename would replace the input (before:
  // `data observables` replaced a jets file with its observables).
  for (const char* cmd : {"observables", "convert"})
    expectCleanFailure(
        {"data", cmd, "--in", p("good.h5"), "--out", p("work/../good.h5"), "--overwrite"},
        "is the input file " + p("good.h5"));
  expectCleanFailure({"pretrain", "--data", p("good.h5") + "," + p("bad_truncated.h5"), "--out",
                      p("pre_stream"), "--stream", "--preset", "tiny", "--epochs", "1"},
                     p("bad_truncated.h5"));
  expectCleanFailure({"pretrain", "--data", p("bad_nan.h5"), "--out", p("ckpt"), "--preset", "tiny",
                      "--epochs", "1"},
                     p("bad_nan.h5"));
  expectCleanFailure({"unfold", "--mc", p("good.h5"), "--data", p("data.h5"), "--init", "none",
                      "--out", p("unfold_out"), "--replica", "0", "--member", "0"},
                     p("good.h5"));
  // 2 * iterations overflowed an int and the chain crashed with SIGSEGV.
  for (const char* n : {"0", "2147483647"})
    expectCleanFailure(
        {"unfold", "--mc", p("mc.h5"), "--data", p("data.h5"), "--init", "none", "--out",
         p("unfold_out"), "--replica", "0", "--member", "0", "--iterations", n},
        "iterations must be in [1, 1000]");
}

TEST_F(BadInputs, ModelConfigs) {
  for (const char* c : {"syntax.json", "unknown_key.json", "wrong_type.json", "negative.json",
                        "not_object.json", "train_type.json", "top_key.json", "no_such_config.json",
                        "wrapped_int.json", "fraction_int.json"}) {
    expectCleanFailure({"pretrain", "--data", p("good.h5"), "--out", p(std::string("pre_") + c),
                        "--config", p(c), "--epochs", "1"},
                       p(c));
  }
  expectCleanFailure({"model", "info", "--preset", "gigantic", "--json"}, "gigantic");
  // A run that diverges (jet weights whose weighted loss overflows) stops with exit 1 and writes
  // no model (before: it wrote a checkpoint of NaN weights and exited 0).
  expectCleanFailure({"pretrain", "--data", p("bad_huge_weights.h5"), "--out", p("pre_diverges"),
                      "--epochs", "1", "--preset", "tiny"},
                     "training diverged at epoch 0", 1);
  // A weight decay that would zero or flip the weights every step is refused by name, up front.
  std::ofstream(p("decays.json")) << R"({"train": {"weight_decay": 1e308}})";
  expectCleanFailure({"pretrain", "--data", p("good.h5"), "--out", p("pre_decays"), "--config",
                      p("decays.json"), "--epochs", "1", "--preset", "tiny"},
                     "weight_decay 1e+308 at the peak learning rate");
  // The trainer works in host memory: NCCL (GPU tensors) is refused before any data is read.
  expectCleanFailure({"pretrain", "--data", p("good.h5"), "--out", p("pre_nccl"), "--epochs", "1",
                      "--dist-backend", "nccl"},
                     "--dist-backend nccl");
}

TEST_F(BadInputs, CampaignSpecs) {
  for (const char* s :
       {"spec_syntax.json", "spec_unknown.json", "spec_zero_replicas.json", "spec_gpus.json",
        "spec_executor.json", "spec_kind.json", "spec_retry.json", "no_such_spec.json"}) {
    expectCleanFailure({"campaign", "init", p(s), "--dir", p(std::string("camp_") + s)}, "");
  }
  expectCleanFailure({"campaign", "init", p("spec_missing_file.json"), "--dir", p("camp_mf")},
                     "/nonexistent/mc.h5");
  // A plan starts no task: it is made before the inputs are staged.
  const RunResult plan = run({"campaign", "plan", p("spec_missing_file.json"), "--gpus", "2",
                              "--task-minutes", "5", "--json"},
                             dir_ / "work");
  EXPECT_EQ(plan.code, 0) << plan.err;
  // A task time given beside --from is the plan's (it was ignored for the measured one, and a
  // campaign with no task done was refused although the time was given).
  const RunResult given = run({"campaign", "plan", p("spec_good.json"), "--gpus", "2",
                               "--task-minutes", "5", "--from", p("camp"), "--json"},
                              dir_ / "work");
  ASSERT_EQ(given.code, 0) << given.err;
  EXPECT_NE(given.out.find("\"task_s\": 300.0"), std::string::npos) << given.out;
  EXPECT_NE(given.out.find("task time given, spread default, failure rate measured on 0 done "
                           "task(s)"),
            std::string::npos)
      << given.out;
  expectCleanFailure({"campaign", "plan", p("spec_good.json"), "--gpus", "2", "--from", p("camp")},
                     "no task is done yet");
  expectCleanFailure({"campaign", "init", p("spec_chain_classifier.json"), "--dir", p("camp_cc")},
                     "bdt");
  expectCleanFailure({"campaign", "init", p("spec_chain_observable.json"), "--dir", p("camp_co")},
                     "tau32");
  expectCleanFailure({"campaign", "init", p("spec_chain_lr_factor.json"), "--dir", p("camp_lrf")},
                     "lr_factor");
  // `campaign plan`: values out of range are refused, not replaced by the defaults.
  for (const auto& [option, value] : std::vector<std::pair<std::string, std::string>>{
           {"--spread", "-0.5"}, {"--tasks-per-gpu", "0"}, {"--gpus-per-node", "0"}}) {
    expectCleanFailure({"campaign", "plan", p("spec_plan.json"), "--gpus", "2", "--task-minutes",
                        "5", option, value},
                       option + ": must be");
  }
  expectCleanFailure({"campaign", "init", p("spec_int32.json"), "--dir", p("camp_i32")},
                     "'replicas'");
  expectCleanFailure({"campaign", "init", p("spec_double.json"), "--dir", p("camp_dbl")},
                     "'time_limit_s'");
  expectCleanFailure({"campaign", "init", p("spec_slots.json"), "--dir", p("camp_slots")},
                     "'resources.cpu_slots'");
  expectCleanFailure({"campaign", "init", p("spec_param_seed.json"), "--dir", p("camp_ps")},
                     "'params.seed'");
  expectCleanFailure({"campaign", "init", p("spec_chain_override.json"), "--dir", p("camp_ov")},
                     "'overrides.r0001m0.iterations'");
  expectCleanFailure({"campaign", "init", p("spec_var_type.json"), "--dir", p("camp_vt")},
                     "'variations.jes.type'");
  expectCleanFailure({"campaign", "init", p("spec_var_closure.json"), "--dir", p("camp_vc")},
                     "'variations.closure.inputs.data'");
  expectCleanFailure({"campaign", "init", p("spec_var_pair.json"), "--dir", p("camp_vp")},
                     "one 'up' and one 'down'");
  // An existing campaign directory is never overwritten by init.
  expectCleanFailure({"campaign", "init", p("spec_good.json"), "--dir", p("camp")}, p("camp"));
  expectCleanFailure({"campaign", "status", p("not_a_campaign")}, p("not_a_campaign"));
  // --aggregate on a campaign that is not made of chains: refused before any task runs.
  expectCleanFailure({"campaign", "run", p("camp"), "--aggregate"},
                     "--aggregate needs a campaign of chain tasks");
  expectCleanFailure({"campaign", "retry", p("camp"), "--task", "r0000m0", "--aggregate"},
                     "--aggregate needs a campaign of chain tasks");
  expectCleanFailure({"slurm", "submit", p("camp"), "--aggregate"},
                     "--aggregate needs a campaign of chain tasks");
  expectCleanFailure({"slurm", "submit", p("camp"), "--no-wait", "--aggregate"},
                     "--aggregate needs the watch");
  // Attempt numbers beyond nine digits (before: --attempt 2147483647 ran and wrote a result
  // with it, while @2147483647 was refused).
  expectCleanFailure(
      {"campaign", "work", p("camp"), "--task", "r0000m0", "--attempt", "2147483647"},
      "--attempt must be from 0 (a run by hand) to 999999999");
  expectCleanFailure({"campaign", "work", p("camp"), "--task", "r0000m0@2147483647"},
                     "ID@ATTEMPT (a number up to 999999999)");
}

TEST_F(BadInputs, Checkpoints) {
  // The jets are fit to fine-tune on (0/1 labels): only the checkpoint is at fault.
  const std::string qg = std::string(FOLDFARM_SHARED_DATA_DIR) + "/quark_gluon_2000.h5";
  for (const char* c : {"ckpt_flipped", "ckpt_truncated", "ckpt_nometa", "no_such_ckpt"}) {
    expectCleanFailure(
        {"finetune", "--init", p(c), "--train", qg, "--out", p(std::string("ft_") + c)}, p(c));
  }
  // A pretraining's state/ is no trained model (before: accepted as a foundation).
  ASSERT_TRUE(fs::exists(dir_ / "ckpt" / "state" / "meta.json"));
  expectCleanFailure(
      {"finetune", "--init", p("ckpt/state"), "--train", qg, "--out", p("ft_from_state")},
      p("ckpt/state") + ": the state of a training");
  expectCleanFailure(
      {"unfold", "--mc", p("mc.h5"), "--data", p("data.h5"), "--init", p("ckpt/state"), "--out",
       p("unfold_from_state"), "--replica", "0", "--member", "0"},
      p("ckpt/state") + ": the state of a training");
  // Sizes with a checkpoint (the checkpoint fixes the model): refused, not ignored as before.
  std::ofstream(p("sizes.json")) << R"({"model": {"dim": 16}})";
  expectCleanFailure({"finetune", "--init", p("ckpt"), "--config", p("sizes.json"), "--train", qg,
                      "--out", p("ft_sizes")},
                     p("sizes.json") + "'s \"model\": the model is the checkpoint's");
  expectCleanFailure({"finetune", "--init", p("ckpt"), "--preset", "omnilearn", "--train", qg,
                      "--out", p("ft_preset")},
                     "--preset: the model is the checkpoint's");
  expectCleanFailure({"generate", "--ckpt", p("ckpt_flipped"), "--class", "0", "--jets", "4",
                      "--out", p("existing_out.h5"), "--overwrite"},
                     p("ckpt_flipped"));
  // A chain config's preset beside a foundation of another preset (before: ignored, the
  // foundation's model trained).
  std::ofstream(p("omni_chain.json")) << R"({"preset": "omnilearn"})";
  expectCleanFailure(
      {"unfold", "--mc", p("mc.h5"), "--data", p("data.h5"), "--init", p("ckpt"), "--config",
       p("omni_chain.json"), "--out", p("unfold_preset"), "--replica", "0", "--member", "0"},
      "'preset' \"omnilearn\" is not the foundation's (" + p("ckpt") +
          " was pretrained as \"tiny\")");
}

// A config's "train" recipe is used by finetune (before: read, checked and ignored), and an
// option given on the command line wins over it, for pretrain too (before: the file won).
TEST_F(BadInputs, ConfigRecipesReachFinetuneAndGivenOptionsWin) {
  const std::string qg = std::string(FOLDFARM_SHARED_DATA_DIR) + "/quark_gluon_2000.h5";
  std::ofstream(p("recipe.json")) << R"({"train": {"epochs": 2, "patience": 0}})";
  auto epochsRun = [&](std::vector<std::string> args) {
    const RunResult r = run(args, dir_);
    EXPECT_EQ(r.code, 0) << r.err;
    if (r.code != 0) return -1;
    const size_t at = r.out.find('{');
    return static_cast<int>(nlohmann::json::parse(r.out.substr(at))["fit"]["history"].size());
  };
  const std::vector<std::string> finetune = {
      "finetune",       "--init",  p("ckpt"), "--train",   qg,  "--config",
      p("recipe.json"), "--batch", "256",     "--threads", "1", "--json"};
  auto with = [](std::vector<std::string> a, std::vector<std::string> more) {
    a.insert(a.end(), more.begin(), more.end());
    return a;
  };
  EXPECT_EQ(epochsRun(with(finetune, {"--out", p("ft_recipe")})), 2);
  EXPECT_EQ(epochsRun(with(finetune, {"--out", p("ft_given"), "--epochs", "1"})), 1);
  EXPECT_EQ(epochsRun({"pretrain", "--data", p("good.h5"), "--out", p("pre_given"), "--preset",
                       "tiny", "--config", p("recipe.json"), "--epochs", "1", "--threads", "1"}),
            1);
  // A one-logit fit keeps no EMA: the key is refused rather than ignored.
  std::ofstream(p("ema.json")) << R"({"train": {"ema_decay": 0.9}})";
  expectCleanFailure({"finetune", "--init", p("ckpt"), "--train", qg, "--config", p("ema.json"),
                      "--out", p("ft_ema")},
                     "'train.ema_decay': a one-logit fit keeps no EMA");
}

// A file too small to hold out a validation or test jet at the given fractions trains (a
// smoke test on a few jets is legitimate) and says so once, instead of "val loss nan" epochs
// and a missing test figure; fractions of 0 ask for nothing held out and get no warning. The
// same streamed.
TEST_F(BadInputs, AFileTooSmallToHoldOutJetsIsSaidOnce) {
  const RunResult synth = run({"data", "synth", "--kind", "pretrain", "--jets", "5", "--particles",
                               "16", "--out", p("five.h5")},
                              dir_);
  ASSERT_EQ(synth.code, 0) << synth.err;
  const auto count = [](const std::string& text, const std::string& what) {
    int n = 0;
    for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  };
  RunResult r = run({"pretrain", "--data", p("five.h5"), "--out", p("pre_five"), "--preset", "tiny",
                     "--epochs", "2", "--threads", "1", "--test-fraction", "0.3"},
                    dir_);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(count(r.err, "5 jets hold out no validation jet at --val-fraction 0.1"), 1) << r.err;
  EXPECT_EQ(count(r.err, "hold out no test jet"), 0) << r.err;  // 0.3 x 5 rounds to 2
  r = run({"pretrain", "--data", p("five.h5"), "--out", p("pre_five_none"), "--preset", "tiny",
           "--epochs", "1", "--threads", "1", "--val-fraction", "0", "--test-fraction", "0"},
          dir_);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(count(r.err, "hold out no"), 0) << r.err;
  EXPECT_EQ(count(r.err, "trains on "), 0) << r.err;
  // Held-out sets that leave less than half the jets to train on are said, with the share
  // each fraction is of (before: 0.9 and 0.9 trained on 1 jet of 120 without a word).
  r = run({"pretrain", "--data", p("good.h5"), "--out", p("pre_good_held"), "--preset", "tiny",
           "--epochs", "1", "--threads", "1", "--val-fraction", "0.9", "--test-fraction", "0.9"},
          dir_);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(count(r.err,
                  "trains on 1 of 120 jets (0.8%): --test-fraction 0.9 and --val-fraction 0.9 "
                  "hold out the rest (in memory: --val-fraction is a share of the jets the "
                  "test split left)"),
            1)
      << r.err;
  // Streamed, nothing held out: trained (before: "internal error: tensor does not have a
  // device"), the generator's conditioning taken from training jets, so generate runs.
  r = run({"pretrain", "--data", p("five.h5"), "--out", p("pre_five_stream"), "--preset", "tiny",
           "--epochs", "1", "--threads", "1", "--stream"},
          dir_);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(count(r.err, "hold out no validation jet"), 1) << r.err;
  EXPECT_EQ(count(r.err, "hold out no test jet"), 1) << r.err;
  // Streamed blocks are held out whole: blocks of 50 of 120 jets hold out far more than 10%.
  r = run({"pretrain", "--data", p("good.h5"), "--out", p("pre_good_blocks"), "--preset", "tiny",
           "--epochs", "1", "--threads", "1", "--stream", "--block-rows", "50"},
          dir_);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(count(r.err,
                  "as test jets: blocks are held out whole; use a smaller --block-rows "
                  "(now 50) or more jets"),
            1)
      << r.err;
  EXPECT_EQ(count(r.err, "--test-fraction 0.1 holds out "), 1) << r.err;
  r = run({"pretrain", "--data", p("good.h5"), "--out", p("pre_good_stream"), "--preset", "tiny",
           "--epochs", "1", "--threads", "1", "--stream", "--val-fraction", "0", "--test-fraction",
           "0"},
          dir_);
  EXPECT_EQ(r.code, 0) << r.err;
  r = run({"generate", "--ckpt", p("pre_good_stream"), "--class", "0", "--jets", "3", "--steps",
           "2", "--threads", "1", "--out", p("gen_stream.h5")},
          dir_);
  EXPECT_EQ(r.code, 0) << r.err;
  // Five jets of six classes: no class has the two jets its statistics need; said so.
  r = run({"generate", "--ckpt", p("pre_five"), "--class", "2", "--jets", "3", "--out",
           p("gen_five.h5")},
          dir_);
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("no jet conditioning statistics for class 2: its pretraining saw fewer "
                       "than 2 jets of that class"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(p("gen_five.h5")));
  for (const char* d :
       {"pre_five", "pre_five_none", "pre_five_stream", "pre_good_blocks", "pre_good_stream"})
    fs::remove_all(p(d));
  fs::remove(p("five.h5"));
  fs::remove(p("gen_stream.h5"));
}

TEST_F(BadInputs, CommandLine) {
  expectCleanFailure({"teleport"}, "");
  expectCleanFailure({"data", "synth", "--kind", "pretrain", "--jets", "many", "--out", p("x.h5")},
                     "");
  expectCleanFailure({"data", "synth", "--kind", "pretrain", "--jets", "-5", "--out", p("x.h5")},
                     "");
  expectCleanFailure({"data", "synth", "--kind", "banana", "--jets", "5", "--out", p("x.h5")},
                     "banana");
  expectCleanFailure({"data", "synth", "--kind", "unfold", "--tune", "herwig", "--events", "5",
                      "--out", p("x.h5")},
                     "herwig");
  expectCleanFailure(
      {"data", "synth", "--kind", "pretrain", "--jets", "5", "--out", p("no_dir/x.h5")},
      p("no_dir/x.h5"));
  expectCleanFailure({"data", "synth", "--kind", "pretrain", "--jets", "5"}, "--out");
  // Values out of range are refused, not replaced by the defaults or handed to HDF5.
  for (const auto& [option, value] : std::vector<std::pair<std::string, std::string>>{
           {"--particles", "0"},
           {"--pt-min", "-5"},
           {"--pt-max", "0"},
           {"--deflate", "12"},
           // Below the shower's cut-off: a pT of 1e-100 aborted the generator threads.
           {"--pt-min", "1e-100"},
           {"--pt-max", "1e30"},
           {"--threads", "2147483647"}})
    expectCleanFailure(
        {"data", "synth", "--kind", "pretrain", "--jets", "5", option, value, "--out", p("x.h5")},
        option);
  // Whole numbers CLI11 alone read as something else: "-1" for an unsigned seed was 2^64 - 1,
  // a number beyond 64 bits the largest one.
  for (const auto& [option, value] :
       std::vector<std::pair<std::string, std::string>>{{"--seed", "-1"},
                                                        {"--seed", "18446744073709551616"},
                                                        {"--jets", "99999999999999999999"}})
    expectCleanFailure(
        {"data", "synth", "--kind", "pretrain", "--jets", "5", option, value, "--out", p("x.h5")},
        option + ": must be a whole number");
  expectCleanFailure({"data", "inspect", "--bogus-flag", p("good.h5")}, "--bogus-flag");
  // More local slots than a node has (before: slot state for 2^31 - 1 workers was allocated
  // until the kernel's OOM killer ended the run).
  expectCleanFailure({"campaign", "run", p("no_campaign"), "--slots", "2147483647"}, "--slots");
  // A rank never lost, or lost after 10^10 s: the pilot's shutdown deadline, now plus that in
  // the clock's nanoseconds, overflowed (before: accepted).
  for (const char* value : {"inf", "1e10"})
    expectCleanFailure({"campaign", "run", p("no_campaign"), "--lost-after", value},
                       "--lost-after");
  // Training options no run can use: refused with the option's name before anything is
  // read (before: a held-out fraction above 1 ended in "internal error: cannot create
  // std::vector larger than max_size()", and lr_factor 0 trained the body at lr / 0).
  for (const auto& [option, value] :
       std::vector<std::pair<std::string, std::string>>{{"--val-fraction", "1.5"},
                                                        {"--test-fraction", "-0.1"},
                                                        {"--lr-factor", "0"},
                                                        {"--lr", "nan"},
                                                        {"--lr", "1e308"},
                                                        {"--lr-factor", "1e-320"},
                                                        {"--warmup-epochs", "-2"},
                                                        // libgomp aborted allocating 481 GB.
                                                        {"--threads", "2147483647"}}) {
    const std::string name = option == "--lr-factor"       ? "lr_factor"
                             : option == "--lr"            ? "lr must"
                             : option == "--warmup-epochs" ? "warmup_epochs"
                                                           : option;
    expectCleanFailure({"pretrain", "--data", p("good.h5"), "--preset", "tiny", "--out",
                        p("pt_bad"), option, value},
                       name);
  }
  // generate: no jets or no sampler steps (before: --jets -5 ended in an internal error, and
  // --jets 0 or --steps 0 wrote a file), or steps without end (10^12 ran on for days).
  for (const auto& [option, value] : std::vector<std::pair<std::string, std::string>>{
           {"--jets", "-5"}, {"--jets", "0"}, {"--steps", "0"}, {"--steps", "1000000000000"}}) {
    std::vector<std::string> args{"generate", "--ckpt",    p("ckpt"), "--class", "1",
                                  "--out",    p("gen.h5"), option,    value};
    if (option != "--jets") args.insert(args.end(), {"--jets", "4"});
    expectCleanFailure(
        args, option == "--steps" ? "--steps must lie in 1..100000" : option + " must be >= 1");
  }
  // An option given twice: how often, not "At Most 1 required but received 2" (read as a value).
  expectCleanFailure(
      {"pretrain", "--data", p("good.h5"), "--data", p("good.h5"), "--out", p("twice")},
      "--data: given 2 times; give it once (several files: one --data with a "
      "comma-separated list");
  // An --out inside the checkpoint read: refused even with --overwrite (before: the jets were
  // written over its meta.json, and the checkpoint could not be read again).
  expectCleanFailure({"generate", "--ckpt", p("ckpt"), "--class", "1", "--jets", "4", "--out",
                      p("ckpt") + "/meta.json", "--overwrite"},
                     p("ckpt") + "/meta.json: lies inside the checkpoint --ckpt");
  // More jets than memory holds: refused before the allocation (before: std::bad_alloc after
  // the model had been loaded).
  expectCleanFailure({"generate", "--ckpt", p("ckpt"), "--class", "1", "--out", p("gen.h5"),
                      "--jets", "100000000000"},
                     "generating 100000000000 jets needs");
  expectCleanFailure(
      {"finetune", "--train", p("good.h5"), "--out", p("ft_bad"), "--test-fraction", "1.5"},
      "--test-fraction");
  expectCleanFailure(
      {"finetune", "--train", p("good.h5"), "--out", p("ft_bad"), "--warmup-epochs", "-1"},
      "warmup_epochs");
  // Benchmark settings whose figures would time failing tasks or divide by zero.
  for (const auto& [option, value] : std::vector<std::pair<std::string, std::string>>{
           {"--sleep-seconds", "-1"},
           {"--sleep-seconds", "1e308"},  // overflowed the clock: tasks slept 0 s, "inf%"
           {"--load-tasks", "0"},
           {"--pilot-ranks", "-2"}})
    expectCleanFailure({"bench", "scheduler", "--tasks", "10", "--load-mb", "1", option, value},
                       option);
  // Step counts and sizes no benchmark can time (before: bench pet --warmup -1 crashed with
  // a segmentation fault; --steps 0 printed zero figures, and bench optim "bit_identical"
  // after no step; bench data --particles -5 ended in an internal error).
  for (const auto& [option, value] : std::vector<std::pair<std::string, std::string>>{
           {"--warmup", "-1"},
           {"--steps", "0"},
           {"--max-jets", "-5"},
           {"--peak-tflops", "-1"},
           {"--attention", "flash"},
           // warmup + steps overflowed and the benchmark crashed with SIGSEGV.
           {"--steps", "99999999999999999999"},
           {"--warmup", "99999999999999999999"}})
    expectCleanFailure({"bench", "pet", "--data", p("good.h5"), "--preset", "tiny", option, value},
                       option);
  expectCleanFailure({"bench", "optim", "--preset", "tiny", "--steps", "0"}, "--steps");
  // bench ddp: warmup + steps overflowed and no step ran ("jets_per_s": null); allreduce: a
  // first size of 0 never grew and filled the memory with sizes.
  for (const auto& [option, value] : std::vector<std::pair<std::string, std::string>>{
           {"--steps", "2147483647"}, {"--warmup", "-1"}})
    expectCleanFailure({"bench", "ddp", option, value}, option);
  for (const auto& [option, value] : std::vector<std::pair<std::string, std::string>>{
           {"--min-kib", "0"}, {"--max-mib", "inf"}, {"--repeats", "2147483647"}})
    expectCleanFailure({"bench", "allreduce", option, value}, option);
  for (const auto& [option, value] :
       std::vector<std::pair<std::string, std::string>>{{"--particles", "-5"}, {"--epochs", "0"}})
    expectCleanFailure({"bench", "data", "--jets", "1000", option, value}, option);
  for (const auto& [option, value] : std::vector<std::pair<std::string, std::string>>{
           {"--replicas", "1"},
           {"--members", "0"},
           {"--variation-replicas", "-1"},
           {"--variation-replicas", "3"},  // more variation replicas than nominal ones
           {"--rebin-events", "-1"},
           {"--rebin-iterations", "0"}})
    expectCleanFailure({"bench", "aggregate", "--replicas", "2", option, value}, option);
  expectCleanFailure({"study", "scaling", "--particles", "0"}, "--particles");
  // bins + 1 edges overflowed: "internal error: Binning::linspace needs hi > lo".
  expectCleanFailure({"study", "reweight-qg", "--jets", p("good.h5"), "--out", p("qg_bad"),
                      "--bins", "2147483647"},
                     "--bins");
  // A pretraining file of six classes (before: its W, Z, H and top jets taken for gluons).
  expectCleanFailure({"study", "reweight-qg", "--jets", p("good.h5"), "--out", p("qg_six")},
                     "labels must be 0 (gluon) or 1 (quark)");
  // A negative thread count (before: taken as "all cores" without a word).
  expectCleanFailure(
      {"unfold", "--mc", p("mc.h5"), "--data", p("data.h5"), "--init", "none", "--out",
       p("unfold_threads"), "--replica", "0", "--member", "0", "--threads", "-3"},
      "--threads");
  // A chain config whose device is not a string, or that is not an object (before: an
  // internal error from the JSON library).
  for (const auto& [name, text] : std::vector<std::pair<std::string, std::string>>{
           {"cfg_device_number.json", "{\"device\": 5}"}, {"cfg_array.json", "[1, 2]"}}) {
    std::ofstream(p(name)) << text;
    expectCleanFailure(
        {"unfold", "--mc", p("mc.h5"), "--data", p("data.h5"), "--init", "none", "--out",
         p("unfold_cfg"), "--replica", "0", "--member", "0", "--config", p(name)},
        p(name));
  }
  // A key given twice in a chain config or a training config (before: the last taken without
  // a word, one of two learning rates chosen silently).
  std::ofstream(p("cfg_twice.json")) << R"({"epochs": 1, "lr": 0.001, "lr": 0.0001})";
  expectCleanFailure(
      {"unfold", "--mc", p("mc.h5"), "--data", p("data.h5"), "--init", "none", "--out",
       p("unfold_cfg"), "--replica", "0", "--member", "0", "--config", p("cfg_twice.json")},
      p("cfg_twice.json") + ": 'lr' is given twice in one object");
  expectCleanFailure({"pretrain", "--data", p("good.h5"), "--preset", "tiny", "--out",
                      p("pt_twice"), "--config", p("cfg_twice.json")},
                     p("cfg_twice.json") + ": 'lr' is given twice in one object");
  // pretrain with no epoch would write an untrained model as a foundation.
  expectCleanFailure({"pretrain", "--data", p("good.h5"), "--preset", "tiny", "--out", p("pt_e0"),
                      "--epochs", "0"},
                     "--epochs");
  expectCleanFailure({"pretrain", "--data", p("good.h5"), "--preset", "tiny", "--out", p("pt_mj"),
                      "--max-jets", "-4"},
                     "--max-jets");
  // Six classes are no 0/1 labels: the file is named (before: "finetune training set").
  expectCleanFailure({"finetune", "--train", p("good.h5"), "--out", p("ft_six")}, p("good.h5"));
  // generate checks where it writes before it samples (before: exit 1 after the sampling).
  expectCleanFailure(
      {"generate", "--ckpt", p("ckpt"), "--class", "1", "--jets", "4", "--out", p("no_dir/g.h5")},
      p("no_dir/g.h5"));
  // A poll interval that is not a number (before: accepted, and the watch slept NaN seconds).
  expectCleanFailure({"slurm", "submit", p("no_campaign"), "--poll", "nan"}, "--poll");
  // An --out that holds an earlier fine-tuning is not overwritten (before: it was retrained
  // and its model replaced).
  fs::create_directories(dir_ / "ft_earlier" / "model");
  expectCleanFailure({"finetune", "--train", p("good.h5"), "--out", p("ft_earlier")},
                     p("ft_earlier"));
  // Nor is a model whose training state is gone, by a new pretraining (before: retrained and
  // replaced without a word).
  expectCleanFailure({"pretrain", "--data", p("good.h5"), "--preset", "tiny", "--epochs", "1",
                      "--out", p("ft_earlier")},
                     p("ft_earlier") + ": holds a model");
  // A chain's --out that holds a pretraining (its model, its training state): refused, the
  // state kept (before: the chain took state/ for its own and removed it when it finished).
  fs::create_directories(dir_ / "pt_earlier" / "model");
  fs::create_directories(dir_ / "pt_earlier" / "state");
  std::ofstream(p("pt_earlier/state/meta.json")) << "{}";
  expectCleanFailure({"unfold", "--mc", p("mc.h5"), "--data", p("data.h5"), "--init", "none",
                      "--out", p("pt_earlier"), "--replica", "0", "--member", "0"},
                     p("pt_earlier") + ": holds a pretraining or fine-tuning");
  // Names and paths that sbatch would misread: a word that splits the job, a backslash that
  // turns off every % symbol of an output pattern.
  expectCleanFailure({"slurm", "render", "pretrain", "--job-name", "zjets hetjob"}, "--job-name");
  // A pretraining job that could not start (it once waited in the queue to fail).
  expectCleanFailure({"slurm", "render", "pretrain", "--", "--out", p("pre_job")}, "--data");
  expectCleanFailure(
      {"slurm", "render", "pretrain", "--", "--data", p("good.h5"), "--out", "o", "--epoch", "3"},
      "--epoch");
  expectCleanFailure({"slurm", "render", "pretrain", "--output", p("a\\b") + "/%j.out"},
                     "--output");
  // A pilot for no campaign (it once rendered one, to fail in the queue), and GPUs for a
  // campaign whose tasks run on CPUs.
  expectCleanFailure({"slurm", "render", "pilot", p("no_campaign")}, "no_campaign");
  // Array elements never requeue themselves: not offered (before: offered, then refused).
  expectCleanFailure({"slurm", "render", "array", p("camp"), "--requeue"}, "--requeue");
  expectCleanFailure({"slurm", "submit", p("camp"), "--requeue"}, "--requeue");
  // An array element runs on one node: several are the pilot's (before: taken and ignored).
  expectCleanFailure({"slurm", "render", "array", p("camp"), "--nodes", "4"}, "--nodes");
  expectCleanFailure({"slurm", "submit", p("camp"), "-N", "2"}, "-N");
  expectCleanFailure({"slurm", "render", "pilot", p("camp"), "--", "--executor", "local"},
                     "--executor");
  // An output directory where a file is: refused before anything is read or trained (exit 1
  // after the work, or an internal error after training both models of the study).
  for (const std::vector<std::string>& cmd :
       {std::vector<std::string>{"pretrain", "--data", p("good.h5"), "--preset", "tiny", "--epochs",
                                 "1", "--out", p("data.h5")},
        std::vector<std::string>{"finetune", "--train", p("good.h5"), "--out", p("data.h5")},
        std::vector<std::string>{"unfold", "--mc", p("mc.h5"), "--data", p("data.h5"), "--init",
                                 "none", "--replica", "0", "--member", "0", "--out",
                                 p("data.h5") + "/chain"},
        std::vector<std::string>{"aggregate", "--runs", p("camp"), "--out", p("data.h5")},
        std::vector<std::string>{"study", "warmstart", "--mc", p("mc.h5"), "--data", p("data.h5"),
                                 "--init", p("ckpt"), "--out", p("data.h5")}})
    expectCleanFailure(cmd, p("data.h5"));
  expectCleanFailure({"study", "warmstart", "--mc", p("mc.h5"), "--data", p("data.h5"), "--init",
                      "none", "--out", p("ws")},
                     "--init none leaves nothing to warm-start from");
  expectCleanFailure({"slurm", "render", "pilot", p("camp"), "--gpus-per-node", "4"},
                     "--gpus-per-node 4");
}

// `aggregate --binning` (rebinning finished chains from their weights): each mistake of the
// binning named in one line, and a simulation changed since the chain read it refused, before
// anything is written; the same chains rebinned as asked.
TEST_F(BadInputs, RebinningMistakes) {
  fs::copy_file(p("mc.h5"), p("rb_mc.h5"), fs::copy_options::overwrite_existing);
  ASSERT_EQ(runMlpChain(p("rb_mc.h5"), "rb_mlp.json", p("rb_chain")), 0);
  std::ofstream(p("rb_bad.json")) << R"({"binning": {"mass": {"lo": 0, "hi": 300}}})";
  const std::vector<std::pair<std::string, std::string>> mistakes = {
      {R"({"mas": {"lo": 0, "hi": 1, "bins": 2}})", "--binning: unknown observable 'mas'"},
      {"{}", "names no observable"},
      {R"({"mass": {"lo": 1, "hi": 0, "bins": 3}})", "--binning of 'mass': needs finite lo < hi"},
      {R"({"mass": )", "--binning: not valid JSON"},
      {p("rb_none.json"), "rb_none.json: no such file"},
      {p("rb_bad.json"), "rb_bad.json: 'binning' of 'mass': give \"lo\", \"hi\" and \"bins\""},
      {p("rb_mlp.json"), "rb_mlp.json: 'classifier' is no observable"},  // no "binning" in it
      {dir_.string(), "is a directory"},
      {"[1, 2]", "--binning must be a JSON object"},
      {R"({"mass": {"lo": -1e308, "hi": 1e308, "bins": 3}})", "too far apart"},
      {"", "--binning: empty"},
      {R"({"mass": {"lo": 0, "hi": 1, "bins": 2, "bins": 4}})",
       "--binning: 'mass.bins' is given twice in one object"}};
  for (const auto& [binning, named] : mistakes) {
    expectCleanFailure(
        {"aggregate", "--runs", p("rb_chain"), "--out", p("rb_agg"), "--binning", binning}, named);
    expectCleanFailure({"campaign", "aggregate", p("camp"), "--binning", binning}, named);
  }
  const std::string mass = R"({"mass": {"lo": 0, "hi": 300, "bins": 30}})";
  const FileStat was = statPath(p("rb_mc.h5"));
  ASSERT_EQ(setModificationTime(p("rb_mc.h5"), was.mtime_ns + 2000000000LL), "");
  expectCleanFailure(
      {"aggregate", "--runs", p("rb_chain"), "--out", p("rb_agg"), "--binning", mass},
      "rb_chain: read its simulation " + p("rb_mc.h5"));
  ASSERT_EQ(setModificationTime(p("rb_mc.h5"), was.mtime_ns), "");
  // A campaign spec's chain.config.binning serves as well.
  std::ofstream(p("rb_spec.json"))
      << R"({"task": "chain", "chain": {"config": {"binning": )" << mass << "}}}";
  const RunResult ok = run({"aggregate", "--runs", p("rb_chain"), "--out", p("rb_agg"),
                            "--no-plots", "--binning", p("rb_spec.json")},
                           dir_);
  ASSERT_EQ(ok.code, 0) << ok.err;
  const nlohmann::json summary = nlohmann::json::parse(std::ifstream(p("rb_agg/summary.json")));
  EXPECT_EQ(summary["rebinned"], nlohmann::json::array({"mass"}));
  EXPECT_EQ(summary["observables"]["mass"]["bins"], 30);
  fs::remove_all(p("rb_agg"));
}

// Runs last (gtest runs tests in declaration order within a suite): reports the count.
// A disk that fills while a command writes (here a file-size limit, which the command
// inherits: its writes fail with EFBIG as they would with ENOSPC) ends in one error line
// that gives the system's reason, no crash (HDF5 1.10 crashed at exit on a file whose close
// failed), and no file or empty output directory left behind.
TEST_F(BadInputs, ZFullDisk) {
  ASSERT_EQ(runMlpChain(p("mc.h5"), "mlp_chain.json", p("chain")), 0);
  foldfarm::testing::FileSizeLimit limit(16 * 1024);
  expectCleanFailure(
      {"data", "synth", "--kind", "pretrain", "--jets", "2000", "--out", p("work/big.h5")},
      "File too large", 1);
  expectCleanFailure({"aggregate", "--runs", p("chain"), "--out", p("work/bands/nominal")},
                     "File too large", 1);
  EXPECT_FALSE(fs::exists(p("work/bands"))) << "an empty output directory was left behind";
}

// Sizes beyond the node's memory: one line that says so, not "internal error: std::bad_alloc"
// or, from the generator threads, "terminate called" and exit 134; no temporary file left.
TEST_F(BadInputs, ZOutOfMemory) {
  foldfarm::testing::AddressSpaceLimit limit(rlim_t{6} << 30);
  expectCleanFailure({"data", "synth", "--kind", "pretrain", "--jets", "5", "--particles",
                      "2147483647", "--out", p("work/huge.h5")},
                     "out of memory", 1);
  expectCleanFailure({"data", "synth", "--kind", "unfold", "--events", "5", "--particles",
                      "2147483647", "--threads", "2", "--out", p("work/huge.h5")},
                     "out of memory", 1);
}

TEST_F(BadInputs, ZCount) {
  std::printf("malformed inputs exercised: %d\n", cases_);
  EXPECT_GE(cases_, 30);
}

}  // namespace
