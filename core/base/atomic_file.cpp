#include "core/base/atomic_file.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/text.hpp"

namespace foldfarm {
namespace {

std::string dirOf(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Makes a rename in `dir` durable. Some file systems refuse a directory's descriptor or its
// fsync (EINVAL, EROFS, EBADF, EACCES): nothing more can be done there. Any other failure (an
// I/O error) means the rename may not survive a crash: an error, not silence.
void fsyncDir(const std::string& dir) {
  const Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return;
  if (::fsync(fd.get()) == 0 || errno == EINVAL || errno == EROFS || errno == EBADF ||
      errno == EACCES)
    return;
  throw Error(dir + ": fsync of the directory failed: " + errnoMessage(errno) +
              " (a rename into it may not survive a crash)");
}

std::atomic<unsigned> g_counter{0};

// This host's name as it appears in temporary file names: characters other than letters,
// digits, '.', '-' and '_' become '_'.
const std::string& hostTag() {
  static const std::string tag = [] {
    std::string h = hostName();
    for (char& c : h) {
      const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '-' || c == '_';
      if (!ok) c = '_';
    }
    return h.empty() ? std::string("host") : h;
  }();
  return tag;
}

// Removes the temporaries of `path` that processes of this host left behind when they ended
// without finishing them (SIGKILL, the OOM killer, a node's reboot): "<path>.tmp.<this
// host>.<pid>.<n>" whose pid runs no more. A temporary of another host, or of a process
// that still runs (or whose pid was reused), is kept. Best effort: never throws.
void removeStaleTemporariesOf(const std::string& path) noexcept {
  try {
    const std::string dir = dirOf(path);
    const auto slash = path.rfind('/');
    const std::string prefix =
        (slash == std::string::npos ? path : path.substr(slash + 1)) + ".tmp." + hostTag() + ".";
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return;
    std::vector<std::string> stale;
    while (const dirent* e = ::readdir(d)) {
      const std::string_view name(e->d_name);
      if (name.size() <= prefix.size() || name.substr(0, prefix.size()) != prefix) continue;
      const std::string_view rest = name.substr(prefix.size());
      const size_t dot = rest.find('.');
      if (dot == std::string_view::npos || !allDigits(rest.substr(0, dot)) ||
          !allDigits(rest.substr(dot + 1)) || dot > 9)
        continue;
      const pid_t pid = static_cast<pid_t>(std::stol(std::string(rest.substr(0, dot))));
      if (pid <= 0 || pid == ::getpid()) continue;
      if (::kill(pid, 0) == 0 || errno != ESRCH) continue;  // runs (or is not ours to ask)
      stale.emplace_back(name);
    }
    ::closedir(d);
    for (const auto& name : stale) {
      const std::string full = dir + "/" + name;
      if (::unlink(full.c_str()) == 0)
        logInfo("removed {}, left by a process of this host that ended before finishing it", full);
    }
  } catch (...) {
  }
}

// The temporary files being written, for removeLiveTemporaryFiles(): fixed slots that a
// signal handler can walk without locks or allocation. State 0: free; 1: being changed;
// 2: `path` names a live temporary file. A temporary beyond the last slot is not recorded
// (it is still removed when its AtomicFile is destroyed).
struct LiveSlot {
  std::atomic<int> state{0};
  char path[PATH_MAX];
};
constexpr int kLiveSlots = 64;
LiveSlot g_live[kLiveSlots];
static_assert(std::atomic<int>::is_always_lock_free, "signal-safe slots needed");

int recordLive(const std::string& path) noexcept {
  if (path.size() >= PATH_MAX) return -1;
  for (int i = 0; i < kLiveSlots; ++i) {
    int expected = 0;
    if (g_live[i].state.compare_exchange_strong(expected, 1)) {
      std::memcpy(g_live[i].path, path.c_str(), path.size() + 1);
      g_live[i].state.store(2);
      return i;
    }
  }
  return -1;
}

void forgetLive(int slot) noexcept {
  if (slot >= 0) g_live[slot].state.store(0);
}

extern "C" void onFatalSignal(int signo) {
  removeLiveTemporaryFiles();
  // One line, so that an ending by SIGTERM or Ctrl-C is not silent (async-signal-safe).
  char line[160] = "foldfarm: ended by signal ";
  size_t n = std::strlen(line);
  char digits[12];
  int k = 0;
  for (int v = signo; v > 0 && k < 11; v /= 10) digits[k++] = static_cast<char>('0' + v % 10);
  while (k > 0) line[n++] = digits[--k];
  const char tail[] = "; no file it writes is left half-written: run it again\n";
  std::memcpy(line + n, tail, sizeof tail - 1);
  n += sizeof tail - 1;
  ssize_t w = ::write(2, line, n);
  (void)w;
  ::signal(signo, SIG_DFL);
  ::raise(signo);
}

}  // namespace

void removeLiveTemporaryFiles() noexcept {
  for (auto& slot : g_live)
    if (slot.state.load() == 2) ::unlink(slot.path);
}

void installTemporaryFileCleanup() {
  // A write beyond the file size limit (`ulimit -f`) fails with EFBIG and is said, with the
  // file, as any failed write is, instead of ending the process silently with its temporary
  // half-written (SIGXFSZ's default).
  ::signal(SIGXFSZ, SIG_IGN);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) {
    struct sigaction old {};
    if (::sigaction(s, nullptr, &old) != 0 || old.sa_handler == SIG_IGN) continue;  // nohup, &
    struct sigaction sa {};
    sa.sa_handler = onFatalSignal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(s, &sa, nullptr);
  }
}

sigset_t heldSignalSet() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGUSR1}) sigaddset(&set, s);
  return set;
}

void holdSignalsAcrossExec(sigset_t* held) {
  const sigset_t set = heldSignalSet();
  ::sigprocmask(SIG_BLOCK, &set, held);
}

void releaseHeldSignals() {
  const sigset_t set = heldSignalSet();
  ::sigprocmask(SIG_UNBLOCK, &set, nullptr);
}

std::string signalsHeldValue() {
  return std::string(kSignalsHeldEnv) + "=" + std::to_string(::getpid());
}

bool takeSignalsHeldForParent() {
  const char* v = std::getenv(kSignalsHeldEnv);
  const bool ours = v != nullptr && *v != '\0' && std::to_string(::getppid()) == v;
  if (v != nullptr) ::unsetenv(kSignalsHeldEnv);
  if (!ours) releaseHeldSignals();
  return ours;
}

void restoreSignalMask(const sigset_t& mask) {
  ::sigprocmask(SIG_SETMASK, &mask, nullptr);
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  const std::string suffix =
      ".tmp." + hostTag() + "." + std::to_string(::getpid()) + "." + std::to_string(g_counter++);
  temp_ = path_ + suffix;
  // A name near NAME_MAX (255 bytes) leaves no room for the suffix: the temporary takes the
  // name's beginning (the suffix is what marks it), so a legal name is not refused as "File
  // name too long".
  const size_t slash = path_.rfind('/');
  const size_t name_len = path_.size() - (slash == std::string::npos ? 0 : slash + 1);
  if (name_len > 255)
    throw Error(path_ + ": cannot create output file: its name is " + std::to_string(name_len) +
                " bytes long (at most 255 bytes per name and 4095 per path: choose a shorter one)");
  if (name_len + suffix.size() > 255)
    temp_ = path_.substr(0, path_.size() - (name_len + suffix.size() - 255)) + suffix;
  // Recorded before it exists: a signal between its creation and its record would leave it.
  slot_ = recordLive(temp_);
  fd_.reset(::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, kNewFileMode));
  if (!fd_.valid()) {
    const int err = errno;
    forgetLive(std::exchange(slot_, -1));
    errno = err;
    throw Error(path_ + ": cannot create output file: " + errnoMessage(errno) +
                (err == ENAMETOOLONG
                     ? " (at most 255 bytes per name and 4095 per path: choose a shorter one)"
                     : " (check that the directory exists and is writable)"));
  }
  removeStaleTemporariesOf(path_);
}

AtomicFile::AtomicFile(AtomicFile&& other) noexcept
    : path_(std::move(other.path_)),
      temp_(std::move(other.temp_)),
      fd_(std::move(other.fd_)),
      committed_(other.committed_),
      slot_(std::exchange(other.slot_, -1)) {
  other.committed_ = true;
}

AtomicFile::~AtomicFile() noexcept {
  forgetLive(slot_);
  fd_.reset();
  if (!committed_ && !temp_.empty()) {
    if (::unlink(temp_.c_str()) != 0 && errno != ENOENT) {
      logWarn("could not remove temporary file {}: {}", temp_, errnoMessage(errno));
    }
  }
}

void AtomicFile::write(std::string_view bytes) {
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::write(fd_.get(), p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(path_ + ": write failed: " + errnoMessage(errno));
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

void AtomicFile::commit() {
  if (fd_.valid()) {
    if (::fsync(fd_.get()) != 0) throw Error(path_ + ": fsync failed: " + errnoMessage(errno));
    // close() reports write-back errors that fsync may not: checked, not left to ~Fd.
    if (::close(fd_.release()) != 0) throw Error(path_ + ": close failed: " + errnoMessage(errno));
  }
  // A library may have rewritten the temp file by name: make sure its bytes are durable.
  fsyncPath(temp_);
  renameDurable(temp_, path_);
  committed_ = true;
  forgetLive(std::exchange(slot_, -1));
}

bool isTemporaryFileName(std::string_view name) {
  // "<name>.tmp.<host>.<digits>.<digits>" (or, from older versions, without "<host>."),
  // read from the end.
  auto digitsBefore = [&](size_t end) {
    size_t b = end;
    while (b > 0 && name[b - 1] >= '0' && name[b - 1] <= '9') --b;
    return b;
  };
  const size_t n_begin = digitsBefore(name.size());
  if (n_begin == name.size() || n_begin == 0 || name[n_begin - 1] != '.') return false;
  const size_t pid_begin = digitsBefore(n_begin - 1);
  if (pid_begin == n_begin - 1 || pid_begin == 0 || name[pid_begin - 1] != '.') return false;
  constexpr std::string_view kTmp = ".tmp.";
  const std::string_view head = name.substr(0, pid_begin);  // "<name>.tmp.[<host>.]"
  if (head.size() > kTmp.size() && head.substr(head.size() - kTmp.size()) == kTmp) return true;
  // "<name>.tmp.<host>.": the host between the last ".tmp." and the pid.
  const size_t tmp = head.rfind(kTmp, head.size() - 2);
  if (tmp == std::string_view::npos || tmp == 0) return false;
  const std::string_view host = head.substr(tmp + kTmp.size(), head.size() - 1 - tmp - kTmp.size());
  return !host.empty() && std::all_of(host.begin(), host.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
  });
}

int removeTemporaryFilesUnder(const std::string& dir, bool recursive) {
  namespace fs = std::filesystem;
  std::error_code ec;
  int removed = 0;
  fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec);
  if (ec) throw Error(dir + ": cannot list: " + ec.message());
  for (const fs::recursive_directory_iterator end; it != end; it.increment(ec)) {
    if (ec) throw Error(dir + ": cannot list: " + ec.message());
    if (!recursive) it.disable_recursion_pending();
    if (!fs::is_regular_file(it->symlink_status(ec)) ||
        !isTemporaryFileName(it->path().filename().string()))
      continue;
    if (::unlink(it->path().c_str()) != 0) {
      const int err = errno;
      if (err == ENOENT) continue;
      throw Error(it->path().string() + ": cannot remove a temporary file: " + errnoMessage(err));
    }
    ++removed;
  }
  return removed;
}

void removeOutputsNotWritten(const std::vector<std::string>& candidates,
                             const std::vector<std::string>& written, const std::string& who) {
  for (const std::string& path : candidates) {
    if (std::find(written.begin(), written.end(), path) != written.end()) continue;
    std::error_code ec;
    if (std::filesystem::remove(path, ec))
      logInfo("{}: removed {}, an output of an earlier run that this one does not write", who,
              path);
    else if (ec)
      logWarn("{}: cannot remove {} of an earlier run ({}); delete it by hand", who, path,
              ec.message());
  }
}

void writeFileAtomic(const std::string& path, std::string_view content) {
  AtomicFile f(path);
  f.write(content);
  f.commit();
}

void fsyncPath(const std::string& path) {
  const Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) throw Error(path + ": cannot open for fsync: " + errnoMessage(errno));
  if (::fsync(fd.get()) != 0) throw Error(path + ": fsync failed: " + errnoMessage(errno));
}

void renameDurable(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    throw Error("cannot rename " + from + " to " + to + ": " + errnoMessage(errno));
  }
  fsyncDir(dirOf(to));
}

void fsyncDirectoryOf(const std::string& path) {
  fsyncDir(dirOf(path));
}

void requireOutputDirectory(const std::string& path) {
  const std::filesystem::path p(path);
  const auto parent = p.has_parent_path() ? p.parent_path() : std::filesystem::path(".");
  if (!std::filesystem::is_directory(parent))
    throw InputError(path + ": output directory " + parent.string() +
                     (std::filesystem::exists(parent) ? " is not a directory; name a file in one"
                                                      : " does not exist; create it first"));
  if (std::filesystem::is_directory(p))
    throw InputError(path + ": is a directory; name a file for the output");
  // A file made and removed again: a directory the output cannot go into is said before the
  // work that makes it (root passes access() where an immutable or read-only one refuses).
  const std::string probe =
      (parent / (".foldfarm-write-check." + std::to_string(::getpid()))).string();
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0 && errno != EEXIST)
    throw InputError(path + ": cannot write into " + parent.string() + " (" + errnoMessage(errno) +
                     "); make it writable or name a file elsewhere");
  if (fd >= 0) {
    ::close(fd);
    ::unlink(probe.c_str());
  }
}

void requireOutputDirectoryPath(const std::string& dir, const std::string& option) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path target = fs::absolute(dir, ec).lexically_normal();
  if (ec) return;  // the writer reports it
  for (fs::path p = target;; p = p.parent_path()) {
    const fs::file_status st = fs::status(p, ec);
    if (fs::is_directory(st)) return;
    if (fs::exists(st))
      throw InputError(dir + ": " +
                       (p == target ? std::string("exists and is not a directory")
                                    : "cannot be made: " + p.string() + " is not a directory") +
                       "; choose another " + option);
    if (p == p.parent_path()) return;
  }
}

void refuseOutputOverInput(const std::string& out, const std::string& in, const std::string& what) {
  std::error_code ec;
  if (!std::filesystem::equivalent(out, in, ec) || ec) return;  // distinct, or out not there yet
  throw InputError(out + ": is the input file " + in + "; " + what +
                   " would replace it: write to another path");
}

void makeDirectory(const std::string& dir) {
  if (::mkdir(dir.c_str(), kNewDirectoryMode) != 0 && errno != EEXIST)
    throwSystemError("mkdir", __FILE__, __LINE__, dir);
}

MadeDirectories::MadeDirectories(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<fs::path> missing;
  fs::path target = fs::absolute(dir, ec).lexically_normal();
  if (!target.has_filename()) target = target.parent_path();  // "out/" is "out"
  for (fs::path p = target; !p.empty() && !fs::exists(p, ec); p = p.parent_path()) {
    missing.push_back(p);
    if (p == p.parent_path()) break;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (!fs::create_directory(*it, ec) && ec) {
      const std::string why = ec.message();
      const int code = ec.value();
      removeEmpty();
      // Permissions and read-only file systems are the user's to change (exit 2, as the same
      // directory given itself); anything else is the system's.
      if (code == EACCES || code == EPERM || code == EROFS)
        throw InputError(dir + ": cannot create the output directory (" + why +
                         "); make its parent writable or choose another");
      throw Error(dir + ": cannot create the output directory: " + why);
    }
    made_.insert(made_.begin(), it->string());
  }
}

MadeDirectories::~MadeDirectories() noexcept {
  removeEmpty();
}

void MadeDirectories::removeEmpty() noexcept {
  for (const std::string& d : made_) {
    if (::rmdir(d.c_str()) != 0) break;  // not empty (or gone): keep it and its parents
  }
  made_.clear();
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot read: " + errnoMessage(errno));
  // A directory opens (and reads as empty, or as "not valid JSON"): say what it is.
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    throw InputError(path + ": is a directory, not a file");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace foldfarm
