#pragma once
// Shared pieces of the jobs tests: scratch directories, spec files, and running ff_jobs_tool as
// a real child process (exit code and stderr captured).
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobs/campaign.hpp"
#include "tests/support/scratch_dir.hpp"

namespace foldfarm::jobs::testing {

// Sets an environment variable for the tools this scope starts.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() { ::unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
};

// Entries of directory `dir` (0 when it does not exist).
inline int entries(const std::string& dir) {
  if (!std::filesystem::exists(dir)) return 0;
  return static_cast<int>(std::distance(std::filesystem::directory_iterator(dir),
                                        std::filesystem::directory_iterator()));
}

// `<temp>/ff_jobs_<name>_XXXXXX`, removed when the test that made it passes.
inline std::string makeScratchDir(const std::string& name) {
  return foldfarm::testing::newScratchDir("ff_jobs_" + name + "_");
}

// The task part of a campaign spec (task, replicas, params, overrides) whose first two tasks,
// r0000m0 and r0001m0, end at once and whose others wait for the file `go`: nothing but the
// stop under test can end such a campaign, however slow the machine, until `go` is made.
inline nlohmann::json gatedCommandTasks(const std::string& go, int replicas) {
  return {
      {"task", "command"},
      {"replicas", replicas},
      {"params", {{"argv", {"/bin/sh", "-c", "while [ ! -e '" + go + "' ]; do sleep 0.05; done"}}}},
      {"overrides",
       {{"r0000m0", {{"argv", {"/bin/sh", "-c", "exit 0"}}}},
        {"r0001m0", {{"argv", {"/bin/sh", "-c", "exit 0"}}}}}}};
}

inline void writeText(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
}

inline std::string readText(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline bool exists(const std::string& path) {
  return ::access(path.c_str(), F_OK) == 0;
}

inline std::string writeSpec(const std::string& dir, const nlohmann::json& spec,
                             const std::string& name = "spec.json") {
  std::string p = dir + "/" + name;
  writeText(p, spec.dump(2));
  return p;
}

struct ToolRun {
  int exit_code = -1;
  std::string err;  // stderr
  std::string out;  // stdout
};

// Starts `exe` with args; stdout/stderr go to <scratch>/<tag>.out and .err.
inline pid_t startProgram(const std::string& exe, const std::vector<std::string>& args,
                          const std::string& scratch, const std::string& tag) {
  std::vector<std::string> a{exe};
  a.insert(a.end(), args.begin(), args.end());
  std::string out = scratch + "/" + tag + ".out", err = scratch + "/" + tag + ".err";
  pid_t pid = ::fork();
  if (pid == 0) {
    int fo = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int fe = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ::dup2(fo, 1);
    ::dup2(fe, 2);
    std::vector<char*> argv;
    for (auto& s : a) argv.push_back(s.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

// Starts ff_jobs_tool with args (see startProgram).
inline pid_t startTool(const std::vector<std::string>& args, const std::string& scratch,
                       const std::string& tag) {
  return startProgram(FF_JOBS_TOOL, args, scratch, tag);
}

inline int waitExit(pid_t pid) {
  int st = 0;
  ::waitpid(pid, &st, 0);
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  return 128 + WTERMSIG(st);
}

inline ToolRun runTool(const std::vector<std::string>& args, const std::string& scratch,
                       const std::string& tag = "tool") {
  ToolRun r;
  r.exit_code = waitExit(startTool(args, scratch, tag));
  r.out = readText(scratch + "/" + tag + ".out");
  r.err = readText(scratch + "/" + tag + ".err");
  return r;
}

// Whether process `pid` runs; a zombie (killed, not yet reaped) counts as gone.
inline bool processAlive(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  size_t close = s.rfind(')');
  return close != std::string::npos && close + 2 < s.size() && s[close + 2] != 'Z';
}

// The processes whose parent is `parent` (this host's /proc), by pid.
inline std::vector<pid_t> childPids(pid_t parent) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream f("/proc/" + name + "/stat");
    std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const size_t close = s.rfind(')');  // "pid (comm) state ppid ..."
    if (close == std::string::npos) continue;
    std::istringstream rest(s.substr(close + 1));
    std::string state;
    long ppid = 0;
    if (rest >> state >> ppid && ppid == parent && state != "Z")
      out.push_back(static_cast<pid_t>(std::stol(name)));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// task_result.json files under a campaign's tasks/ directory; `mismatched` counts those
// naming another task or a failed status.
inline int countResultFiles(const std::string& tasks_dir, int& mismatched) {
  int n = 0;
  mismatched = 0;
  DIR* d = ::opendir(tasks_dir.c_str());
  if (!d) return 0;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name[0] == '.') continue;
    auto r = readTaskResult(tasks_dir + "/" + name + "/task_result.json");
    if (!r) continue;
    ++n;
    if (r->task_id != name || r->status != 0) ++mismatched;
  }
  ::closedir(d);
  return n;
}

// A process standing for an attempt of another host: it takes the lease of `task_dir`
// (created if need be) with a holder record naming `attempt` on host "elsewhere" (which no
// fencing here may signal), holds it `seconds` (with `release_once`, until that file exists,
// `seconds` at most: a test that needs an attempt refused does not depend on how soon a
// loaded machine starts it), runs `before_release` (say, writes that attempt's result) and
// ends, which releases it. Returns its pid once it holds the lease (-1 if it could not take it).
inline pid_t holdLeaseAsAnotherHost(const std::string& task_dir, int attempt, unsigned seconds,
                                    const std::function<void()>& before_release = {},
                                    const std::string& release_once = "") {
  std::filesystem::create_directories(task_dir);
  int ready[2];
  if (::pipe(ready) != 0) return -1;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(ready[0]);
    const int fd = ::open((task_dir + "/.lease").c_str(), O_RDWR | O_CREAT, 0644);
    if (fd < 0 || ::flock(fd, LOCK_EX) != 0) ::_exit(3);
    const std::string rec = "{\"attempt\":" + std::to_string(attempt) +
                            ",\"host\":\"elsewhere\",\"pid\":1,\"pgid\":0}\n";
    if (::pwrite(fd, rec.data(), rec.size(), 0) < 0) ::_exit(3);
    if (::write(ready[1], "x", 1) != 1) ::_exit(3);
    if (release_once.empty()) {
      ::sleep(seconds);
    } else {
      for (unsigned tenth = 0; tenth < 10 * seconds && ::access(release_once.c_str(), F_OK) != 0;
           ++tenth)
        ::usleep(100000);
    }
    if (before_release) before_release();
    ::_exit(0);
  }
  ::close(ready[1]);
  char byte = 0;
  const bool held = pid > 0 && ::read(ready[0], &byte, 1) == 1;
  ::close(ready[0]);
  return held ? pid : -1;
}

inline int countLines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

}  // namespace foldfarm::jobs::testing
