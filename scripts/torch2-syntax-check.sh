#!/usr/bin/env bash
# Compiles, for syntax and types only, every source file of a configured build that includes
# LibTorch against a newer LibTorch's headers: Debian's libtorch-dev from another suite
# (default trixie: LibTorch 2.6), unpacked without installing. The GPU machines build against
# PyTorch 2.x, whose interface differs from Debian 12's LibTorch 1.13 (autocast, SDPA,
# profiler); this finds the differences on any machine, in minutes rather than GPU time.
#   scripts/torch2-syntax-check.sh [BUILD_DIR]       (default: build)
# Environment (defaults): FF_TORCH2_SUITE (trixie), FF_TORCH2_DIR (/tmp/libtorch2-SUITE),
# FF_TORCH2_STD (the build's -std=; e.g. c++20), FF_TORCH2_FILTER (every file; a regex
# of the paths to check), FF_JOBS (nproc), FF_TORCH2_LIBSTDCXX ("": the compiler's own C++
# library; e.g. 14: the suite's libstdc++-14-dev headers, unpacked too, and every C++ file
# of the build, not only LibTorch's, compiled with clang++ against them: newer libstdc++
# includes fewer headers through others, so a missing #include shows), FF_TORCH2_CXX (the
# build's compiler; clang++ with FF_TORCH2_LIBSTDCXX).
# Needs: curl, xz, dpkg-deb, python3, the build's compiler; network access to
# deb.debian.org. The CUDA code paths are checked with FOLDFARM_TORCH_CUDA where the build
# checks them (its foldfarm_torch_cuda_syntax target).
# Exit status: 0 when every file compiles, 1 when one does not (its first errors are
# printed), 2 on a usage or set-up error.
set -u -o pipefail

case "${1:-}" in
  -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
esac
build=${1:-build}
suite=${FF_TORCH2_SUITE:-trixie}
dir=${FF_TORCH2_DIR:-/tmp/libtorch2-$suite}
jobs=${FF_JOBS:-$(nproc)}
cc=$build/compile_commands.json
[ -f "$cc" ] || { echo "torch2-syntax-check: no $cc (configure the build first)" >&2; exit 2; }

inc=$dir/usr/include
base=http://deb.debian.org/debian
mkdir -p "$dir" || exit 2
# Unpacks package $1 of the suite into $dir (once).
fetch_deb() {
  local file
  [ -s "$dir/Packages.xz" ] ||
    curl -sSfL -o "$dir/Packages.xz" "$base/dists/$suite/main/binary-amd64/Packages.xz" ||
    { echo "torch2-syntax-check: cannot read $suite's package index from $base" >&2; return 2; }
  file=$(xz -dc "$dir/Packages.xz" | awk -v p="$1" '$0 == "Package: " p {f=1} f&&/^Filename:/{print $2; exit}')
  [ -n "$file" ] || { echo "torch2-syntax-check: $suite has no $1" >&2; return 2; }
  curl -sSfL -o "$dir/$1.deb.tmp" "$base/$file" && mv "$dir/$1.deb.tmp" "$dir/$1.deb" &&
    dpkg-deb -x "$dir/$1.deb" "$dir" ||
    { echo "torch2-syntax-check: cannot fetch or unpack $base/$file" >&2; return 2; }
}
libstdcxx=${FF_TORCH2_LIBSTDCXX:-}
cxx=${FF_TORCH2_CXX:-}
stdinc=""
if [ -n "$libstdcxx" ]; then
  stdinc=$dir/usr/include/c++/$libstdcxx
  [ -d "$stdinc" ] || fetch_deb "libstdc++-$libstdcxx-dev" || exit 2
  [ -n "$cxx" ] || cxx=clang++
fi

if [ ! -f "$inc/torch/csrc/api/include/torch/version.h" ]; then
  echo "torch2-syntax-check: fetching $suite's libtorch-dev into $dir"
  fetch_deb libtorch-dev || exit 2
fi
version=$(awk '/define TORCH_VERSION_(MAJOR|MINOR|PATCH)/{v=v (v?".":"") $3} END{print v}' \
  "$inc/torch/csrc/api/include/torch/version.h")

# What the build's own precompiled header holds (as plain text: its .gch is for the other
# headers) and the generated CUDA header that Debian's CPU LibTorch leaves out.
work=$dir/check
rm -rf "$work" && mkdir -p "$work/shim/c10/cuda/impl" "$work/log" || exit 2
printf '#pragma GCC system_header\n#include <torch/torch.h>\n' >"$work/pch.hxx"
printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' >"$work/shim/c10/cuda/impl/cuda_cmake_macros.h"

python3 - "$cc" "$inc" "$work" "${FF_TORCH2_STD:-}" "${FF_TORCH2_FILTER:-}" "$cxx" "$stdinc" <<'EOF' || exit 2
import json, re, shlex, sys
cc, inc, work, std, flt, cxx, stdinc = sys.argv[1:8]
old = "/usr/include/torch/csrc/api/include"
cmds = []
for i, e in enumerate(json.load(open(cc))):
    args = e.get("arguments") or shlex.split(e["command"])
    if args[0].endswith("ccache"):
        args = args[1:]
    if e["file"].endswith(".cu") or (flt and not re.search(flt, e["file"])):
        continue
    if old not in args and not stdinc:
        continue
    out, j = [cxx or args[0], "-fsyntax-only", "-O0"], 1
    if stdinc:  # the newer C++ library's headers instead of the compiler's; its warnings off
        out += ["-w", "-nostdinc++", "-isystem", stdinc,
                "-isystem", stdinc.replace("/usr/include/c++/", "/usr/include/x86_64-linux-gnu/c++/")]
    while j < len(args):
        a = args[j]
        if a in ("-o", "-MF", "-MT"): j += 2; continue
        if a in ("-MD", "-Winvalid-pch", "-fsyntax-only") or re.fullmatch(r"-O[0-9s]", a): j += 1; continue
        if a == "-include": out += ["-include", work + "/pch.hxx"]; j += 2; continue
        if a == "-isystem" and args[j + 1] == old:
            out += ["-isystem", inc, "-isystem", inc + "/torch/csrc/api/include"]; j += 2; continue
        if std and a.startswith("-std="): out.append("-std=" + std); j += 1; continue
        out.append(a); j += 1
    if "-DFOLDFARM_TORCH_CUDA=1" in out:
        out[1:1] = ["-isystem", work + "/shim"]
    log = "%s/log/%03d.log" % (work, i)
    cmds.append("cd %s && %s >%s 2>&1 || echo %s %s" % (
        shlex.quote(e["directory"]), " ".join(shlex.quote(x) for x in out), log, log, e["file"]))
open(work + "/cmds.txt", "w").write("\n".join(cmds) + ("\n" if cmds else ""))

EOF
n=$(wc -l <"$work/cmds.txt")
echo "torch2-syntax-check: $n files against LibTorch $version ($inc)${stdinc:+ and $stdinc with $cxx}, $jobs at a time"
t0=$(date +%s)
tr '\n' '\0' <"$work/cmds.txt" | xargs -0 -P "$jobs" -I{} bash -c '{}' >"$work/failed.txt"
failed=$(wc -l <"$work/failed.txt")
echo "torch2-syntax-check: $((n - failed)) of $n compile against LibTorch $version ($(($(date +%s) - t0)) s)"
while read -r log file; do
  echo "== $file"
  grep -m 5 -E "error" "$log"
done <"$work/failed.txt"
[ "$failed" -eq 0 ]
