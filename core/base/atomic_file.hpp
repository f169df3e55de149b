#pragma once
// Atomic file output: write to "<path>.tmp.<host>.<pid>.<n>" in the same directory, fsync,
// rename over the destination, fsync the directory. Readers see either the old file or the
// whole new one, never a partial file. If the writer is destroyed without commit() (an
// exception, a failed check), the temporary file is removed and the destination is untouched.
// A writer that could not remove it (SIGKILL, the OOM killer) leaves it behind; the next
// AtomicFile of the same path removes such temporaries of this host whose process runs no
// more (a temporary of another host is left alone: its pid means nothing here).
//
// Thread-safety: one AtomicFile per thread; distinct objects are independent.
#include <signal.h>
#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "core/base/fd.hpp"

namespace foldfarm {

// The modes foldfarm creates files and directories with: read-write (0666) and rwx (0777) for
// all, less what the user's umask or the directory's default ACL takes away, as cp, tar and HDF5
// create theirs. A campaign in a group's directory (umask 002, or a default ACL granting the
// group) then stays the group's to resume, retry and aggregate. Before: 0644 and 0755, so the
// group lost write access whatever the umask said, and a default ACL's mask became read-only.
inline constexpr mode_t kNewFileMode = 0666;
inline constexpr mode_t kNewDirectoryMode = 0777;

class AtomicFile {
 public:
  // Creates the temporary file next to `path`. Throws Error if it cannot be created.
  explicit AtomicFile(std::string path);
  ~AtomicFile() noexcept;
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  AtomicFile(AtomicFile&& other) noexcept;
  AtomicFile& operator=(AtomicFile&&) = delete;

  // The temporary path: libraries that open files by name (HDF5) write here, then commit().
  const std::string& tempPath() const { return temp_; }
  const std::string& path() const { return path_; }

  // Appends bytes to the temporary file (only when opened by this object).
  void write(std::string_view bytes);
  // fsync + close + rename + fsync(dir). Throws Error on failure (the temp file is removed).
  void commit();

 private:
  std::string path_;
  std::string temp_;
  Fd fd_;  // the temporary file, until commit()
  bool committed_ = false;
  int slot_ = -1;  // its entry for removeLiveTemporaryFiles(), -1: none
};

// Removes the temporary file of every AtomicFile neither committed nor destroyed yet.
// Async-signal-safe (unlink only): for a signal handler, before the process ends by its
// signal, so that Ctrl-C or scancel leaves no "<path>.tmp.<host>.<pid>.<n>" behind.
void removeLiveTemporaryFiles() noexcept;
// For SIGINT, SIGTERM and SIGHUP not ignored at start: a handler that removes the live
// temporary files, then ends the process by the same signal (its default action). Commands
// that stop cooperatively (installStopHandlers) replace it for SIGINT and SIGTERM and
// unwind instead, which removes them too. SIGXFSZ is ignored: a write beyond `ulimit -f`
// fails (EFBIG) and is an error naming its file, its temporary removed as for a full disk.
void installTemporaryFileCleanup();

// SIGINT, SIGTERM, SIGHUP and SIGUSR1 held (blocked) across an exec: a process loading a large
// executable (LibTorch takes most of a second) would otherwise die of them silently before its
// main installs the handlers. The new program calls releaseHeldSignals() once it has: a
// signal that came meanwhile is then delivered to its handler. `held` (optional) gets the mask
// before, for restoreSignalMask() when the exec failed.
void holdSignalsAcrossExec(sigset_t* held = nullptr);
void releaseHeldSignals();
void restoreSignalMask(const sigset_t& mask);
// The set held: SIGINT, SIGTERM, SIGHUP, SIGUSR1.
sigset_t heldSignalSet();
// In the environment of a process started with the signals held until its own stop handlers
// are in place (a campaign's worker: releaseHeldSignals() after installStopHandlers(), so that
// a Ctrl-C while it loads stops it as one while it works). Its value is the pid of the process
// that started it (signalsHeldValue()); its main leaves them held only when that is its parent
// (takeSignalsHeldForParent), and removes the variable (its own children start as usual).
inline constexpr const char* kSignalsHeldEnv = "FOLDFARM_SIGNALS_HELD";
// "FOLDFARM_SIGNALS_HELD=<this process's pid>", for the environment of a child it starts with
// the signals held.
std::string signalsHeldValue();
// At the start of main: removes kSignalsHeldEnv and returns true when it names this process's
// parent (the process that started it with the signals held, which stay held for it to
// release); otherwise releases them and returns false. A variable set by hand, or inherited
// from a process that is not the parent (any value: "1", "0", empty), leaves nothing blocked.
bool takeSignalsHeldForParent();

// Whether `name` (a file name without directory) has the form of an AtomicFile temporary,
// "<name>.tmp.<host>.<pid>.<n>" (or "<name>.tmp.<pid>.<n>", as earlier versions named them).
bool isTemporaryFileName(std::string_view name);
// Removes the AtomicFile temporaries under `dir` (recursively; links are not followed) and
// returns how many it removed. Only for a directory no live process writes to: one that the
// caller holds exclusively (a task directory under its lease), where such a file can only be
// what a writer killed by SIGKILL or the OOM killer left behind. Throws Error naming the file
// it cannot remove.
// With `recursive` false, only the files directly in `dir`.
int removeTemporaryFilesUnder(const std::string& dir, bool recursive = true);
// After a command committed the outputs `written` into a directory: removes each of
// `candidates` (the outputs it can write) that it did not write this time, so that the
// directory holds one run's outputs and not figures or files of an earlier run beside them.
// Logs each removal, and a warning naming a file it cannot remove. `who` names the command.
void removeOutputsNotWritten(const std::vector<std::string>& candidates,
                             const std::vector<std::string>& written, const std::string& who);

// Convenience: atomically replace `path` with `content`.
void writeFileAtomic(const std::string& path, std::string_view content);
// fsync the file at `path` (after a library wrote and closed it), then atomically rename
// `from` to `to` and fsync the directory of `to`.
void fsyncPath(const std::string& path);
void renameDurable(const std::string& from, const std::string& to);
// fsync the directory that holds `path` (after a rename into it made elsewhere): Error on an
// I/O error; nothing where the file system refuses a directory's fsync.
void fsyncDirectoryOf(const std::string& path);
// Checks, before anything is read or written, that an output file can be placed at `path`:
// InputError("<path>: output directory <dir> does not exist; create it first") otherwise,
// and InputError("<path>: is a directory; ...") when a directory is at `path` (the rename
// into place would fail only after the work).
void requireOutputDirectory(const std::string& path);
// Checks, before anything is read or computed, that an output directory can be at `dir`:
// InputError("<dir>: exists and is not a directory; ...") when a file is there, or when the
// nearest existing ancestor of a directory still to be made is a file. `option` names the
// command-line option (e.g. "--out") in the advice.
void requireOutputDirectoryPath(const std::string& dir, const std::string& option);
// InputError when the output `out` is the input `in` (the same file, by any path or link):
// the atomic rename would replace the input with the output. `what` names the command.
void refuseOutputOverInput(const std::string& out, const std::string& in, const std::string& what);
// Makes the directory `dir` (kNewDirectoryMode; its parent must exist), nothing when something is
// there already; else Error naming the call, this file and line, `dir` and the reason.
void makeDirectory(const std::string& dir);
// Makes the directory `dir` and its missing parents for a command's outputs (Error naming
// `dir` and the reason when it cannot). Unless keep() is called, the destructor removes the
// directories it made again while they are empty: a command that fails leaves no empty
// output directory behind. It never removes a file, nor a directory that was there before.
class MadeDirectories {
 public:
  explicit MadeDirectories(const std::string& dir);
  ~MadeDirectories() noexcept;
  MadeDirectories(const MadeDirectories&) = delete;
  MadeDirectories& operator=(const MadeDirectories&) = delete;
  void keep() { made_.clear(); }

 private:
  void removeEmpty() noexcept;
  std::vector<std::string> made_;  // innermost first
};

// Reads a whole file; throws InputError("<path>: cannot read: <reason>") on failure.
std::string readFile(const std::string& path);

}  // namespace foldfarm
