#include "jobs/file_locks.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "core/base/error.hpp"

namespace foldfarm::jobs {
namespace {

// A mount point as the kernel writes it: space, tab, newline and backslash as \ooo.
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      const std::string oct = s.substr(i + 1, 3);
      if (oct.size() == 3 && oct.find_first_not_of("01234567") == std::string::npos) {
        out += static_cast<char>(std::stoi(oct, nullptr, 8));
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream in(s);
  while (std::getline(in, part, sep)) parts.push_back(part);
  return parts;
}

bool hasOption(const std::vector<std::string>& options, const std::string& name) {
  for (const auto& o : options)
    if (o == name) return true;
  return false;
}

// `mount` holds `path` (both absolute, normalised): equal, or a prefix ending at a '/'.
bool holds(const std::string& mount, const std::string& path) {
  if (mount == "/") return true;
  return path == mount || (path.size() > mount.size() &&
                           path.compare(0, mount.size(), mount) == 0 && path[mount.size()] == '/');
}

}  // namespace

std::string nodeLocalLocking(const std::string& path, const std::string& mountinfo) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::string target = fs::weakly_canonical(fs::absolute(path, ec), ec).string();
  if (ec || target.empty()) target = fs::absolute(path).lexically_normal().string();
  // The longest mount point holding the path (the last one listed wins a tie: mounted
  // over the earlier).
  std::string best_mount, fstype;
  std::vector<std::string> options;
  std::istringstream lines(mountinfo);
  std::string line;
  while (std::getline(lines, line)) {
    // id parent major:minor root mount-point mount-options [optional...] - fstype source
    // super-options
    const auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    const std::vector<std::string> head = split(line.substr(0, dash), ' ');
    const std::vector<std::string> tail = split(line.substr(dash + 3), ' ');
    if (head.size() < 6 || tail.size() < 3) continue;
    const std::string mount = unescape(head[4]);
    if (!holds(mount, target) || mount.size() < best_mount.size()) continue;
    best_mount = mount;
    fstype = tail[0];
    options = split(head[5], ',');
    for (const auto& o : split(tail[2], ',')) options.push_back(o);
  }
  if (best_mount.empty()) return "";
  const std::string where = fstype + " at " + best_mount;
  if (fstype == "lustre") {
    if (hasOption(options, "localflock"))
      return where + " is mounted with localflock: its locks hold on one node only";
    // Said only when shown: a table without either option is taken as the client's
    // default, and a flock that fails is reported by the lease itself.
    if (hasOption(options, "noflock"))
      return where + " is mounted with noflock: flock(2) fails on it";
    return "";
  }
  if (fstype == "nfs" || fstype == "nfs4") {
    if (hasOption(options, "local_lock=flock") || hasOption(options, "local_lock=all"))
      return where + " keeps flock locks on each client (local_lock=flock or all)";
    if (hasOption(options, "nolock"))
      return where + " is mounted with nolock: its locks hold on one client only";
  }
  return "";
}

std::string nodeLocalLocking(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return "";
  std::ostringstream text;
  text << in.rdbuf();
  return nodeLocalLocking(path, text.str());
}

void requireClusterWideLocks(const std::string& dir, const std::string& spanning) {
  const std::string why = nodeLocalLocking(dir);
  if (why.empty()) return;
  throw InputError(dir + ": " + why + ", and " + spanning +
                   "; task leases could not keep two nodes from running one task. Put the "
                   "campaign on a file system with cluster-wide flock (Lustre mounted with "
                   "flock, GPFS, NFS without local_lock), or run it on one node");
}

}  // namespace foldfarm::jobs
