#!/usr/bin/env bash
# Compiles, for syntax and types only, every source file of a configured build that includes
# LibTorch against a newer LibTorch's headers: Debian's libtorch-dev from another suite
# (default trixie: LibTorch 2.6), unpacked without installing. The GPU machines build against
# PyTorch 2.x, whose interface differs from Debian 12's LibTorch 1.13 (autocast, SDPA,
# profiler); this finds the differences on any machine, in minutes rather than GPU time.
#   scripts/torch2-syntax-check.sh [BUILD_DIR]       (default: build)
# Environment (defaults): FF_TORCH2_SUITE (trixie), FF_TORCH2_DIR (/tmp/libtorch2-SUITE),
# FF_TORCH2_STD (the build's -std=; e.g. c++20), FF_TORCH2_FILTER (every file; a regex
# of the paths to check), FF_JOBS (nproc).
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
if [ ! -f "$inc/torch/csrc/api/include/torch/version.h" ]; then
  echo "torch2-syntax-check: fetching $suite's libtorch-dev into $dir"
  mkdir -p "$dir" || exit 2
  base=http://deb.debian.org/debian
  curl -sSfL -o "$dir/Packages.xz" "$base/dists/$suite/main/binary-amd64/Packages.xz" ||
    { echo "torch2-syntax-check: cannot read $suite's package index from $base" >&2; exit 2; }
  file=$(xz -dc "$dir/Packages.xz" | awk '/^Package: libtorch-dev$/{p=1} p&&/^Filename:/{print $2; exit}')
  [ -n "$file" ] || { echo "torch2-syntax-check: $suite has no libtorch-dev" >&2; exit 2; }
  curl -sSfL -o "$dir/libtorch-dev.deb.tmp" "$base/$file" &&
    mv "$dir/libtorch-dev.deb.tmp" "$dir/libtorch-dev.deb" &&
    dpkg-deb -x "$dir/libtorch-dev.deb" "$dir" ||
    { echo "torch2-syntax-check: cannot fetch or unpack $base/$file" >&2; exit 2; }
fi
version=$(awk '/define TORCH_VERSION_(MAJOR|MINOR|PATCH)/{v=v (v?".":"") $3} END{print v}' \
  "$inc/torch/csrc/api/include/torch/version.h")

# What the build's own precompiled header holds (as plain text: its .gch is for the other
# headers) and the generated CUDA header that Debian's CPU LibTorch leaves out.
work=$dir/check
rm -rf "$work" && mkdir -p "$work/shim/c10/cuda/impl" "$work/log" || exit 2
printf '#pragma GCC system_header\n#include <torch/torch.h>\n' >"$work/pch.hxx"
printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' >"$work/shim/c10/cuda/impl/cuda_cmake_macros.h"

python3 - "$cc" "$inc" "$work" "${FF_TORCH2_STD:-}" "${FF_TORCH2_FILTER:-}" <<'EOF' || exit 2
import json, re, shlex, sys
cc, inc, work, std, flt = sys.argv[1:6]
old = "/usr/include/torch/csrc/api/include"
cmds = []
for i, e in enumerate(json.load(open(cc))):
    args = e.get("arguments") or shlex.split(e["command"])
    if old not in args or (flt and not re.search(flt, e["file"])):
        continue
    out, j = [args[0], "-fsyntax-only", "-O0"], 1
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
print(len(cmds))
EOF
n=$(wc -l <"$work/cmds.txt")
echo "torch2-syntax-check: $n files against LibTorch $version ($inc), $jobs at a time"
t0=$(date +%s)
tr '\n' '\0' <"$work/cmds.txt" | xargs -0 -P "$jobs" -I{} bash -c '{}' >"$work/failed.txt"
failed=$(wc -l <"$work/failed.txt")
echo "torch2-syntax-check: $((n - failed)) of $n compile against LibTorch $version ($(($(date +%s) - t0)) s)"
while read -r log file; do
  echo "== $file"
  grep -m 5 -E "error" "$log"
done <"$work/failed.txt"
[ "$failed" -eq 0 ]
