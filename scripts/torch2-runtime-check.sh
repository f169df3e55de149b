#!/usr/bin/env bash
# Builds foldfarm against a newer LibTorch and runs its CPU tests with it: Debian's
# libtorch-dev of another suite (default trixie: LibTorch 2.6, GCC 14) in a chroot made by
# debootstrap. The GPU machines build against PyTorch 2.x, Debian 12 has LibTorch 1.13; the
# code under TORCH_VERSION_MAJOR >= 2 (scaled_dot_product_attention, autocast's switches,
# zero_grad() setting gradients to none) then runs on the CPU, which the syntax check
# (scripts/torch2-syntax-check.sh) cannot show.
#   scripts/torch2-runtime-check.sh [--root DIR] [--tests REGEX] [--slurm] [--shell]
#     --root DIR     the chroot (default /var/tmp/foldfarm-SUITE; made once, then reused)
#     --tests REGEX  the tests to build and run (default: the model, gradient step (its
#                    bf16 step under the CPU's autocast), training, launch, data-parallel and
#                    chain tests)
#     --slurm        also install the suite's Slurm and munge (trixie: Slurm 24.11), so that
#                    the Slurm tests (--tests slurm) start their cluster there; refused while
#                    this host runs Slurm's daemons (the same ports), stopped at the end
#     --shell        an interactive shell in the chroot instead (the tree is at /src, the
#                    build at /build)
# Environment (defaults): FF_TORCH2_SUITE (trixie), FF_JOBS (nproc), FF_MIRROR
# (http://deb.debian.org/debian).
# Needs: root (debootstrap, chroot, mount), debootstrap, network access to the mirror; about
# 2.5 GB of disk. The work tree is bind-mounted read-only at /src (and ../shared, the
# shipped jets, at /shared); the build is the chroot's /build. The GPU tests skip (exit 77):
# the chroot has no CUDA; so do the browser's, and the Slurm tests unless --slurm.
# Exit status: 0 when every selected test passes, 1 when one fails or does not build, 2 on a
# usage or set-up error.
set -u -o pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
suite=${FF_TORCH2_SUITE:-trixie}
root=/var/tmp/foldfarm-$suite
tests='^test_(model_(pet|flat|step|train|observable_classifier)|dist_(launch|data_parallel|pet)|ensembles_chain)$'
shell=0
slurm=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=$2; shift 2 ;;
    --tests) tests=$2; shift 2 ;;
    --shell) shell=1; shift ;;
    --slurm) slurm=1; shift ;;
    -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
    *) echo "torch2-runtime-check: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
jobs=${FF_JOBS:-$(nproc)}
mirror=${FF_MIRROR:-http://deb.debian.org/debian}
say() { echo "torch2-runtime-check: $*"; }
die() { echo "torch2-runtime-check: $*" >&2; exit 2; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot and mount); run it with sudo"
command -v debootstrap >/dev/null ||
  die "no debootstrap; install it (apt-get install debootstrap)"

# The packages of scripts/setup.sh (its `packages=( ... )` list), but the browser's and,
# without --slurm, Slurm's (their tests skip then), and procps (ps, which minbase lacks).
leave_out='^(chromium|)$'
[ "$slurm" = 1 ] || leave_out='^(slurm.*|munge|chromium|)$'
packages=($(sed -n '/^packages=(/,/^)/{s/#.*//;s/packages=(//;s/)//;p}' "$repo/scripts/setup.sh" |
  tr -s ' \t' '\n' | grep -vE "$leave_out") procps)
[ ${#packages[@]} -gt 5 ] || die "cannot read the package list of $repo/scripts/setup.sh"

if [ ! -x "$root/usr/bin/apt-get" ]; then
  say "debootstrap $suite into $root (once)"
  mkdir -p "$root" || die "cannot make $root"
  debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.debootstrap.log" 2>&1 ||
    die "debootstrap $suite failed; see $root.debootstrap.log"
fi

# Slurm's daemons of this host and of the chroot would take the same ports.
if [ "$slurm" = 1 ]; then
  for pid in $(pgrep -x 'slurmctld|slurmd'); do
    [ "$(readlink "/proc/$pid/root")" = "$(readlink -f "$root")" ] ||
      die "this host runs $(cat "/proc/$pid/comm" 2>/dev/null) (pid $pid): the chroot's Slurm would take its ports; stop it first (scripts/slurm-local.sh stop)"
  done
fi

# Mounts made here are undone on every way out.
mounted=()
cleanup() {
  local i
  # The chroot's Slurm daemons listen on this host's ports: they stop with the check.
  [ "$slurm" = 1 ] && [ -d "$root/src/scripts" ] &&
    in_root "/src/scripts/slurm-local.sh stop" >/dev/null 2>&1
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
mount_once() {  # mount_once TARGET MOUNT-ARGS...: unless TARGET is a mount point already
  local target=$1
  shift
  mkdir -p "$target"
  mountpoint -q "$target" && return 0
  mount "$@" "$target" || die "cannot mount $target"
  mounted+=("$target")
}
mount_once "$root/proc" -t proc proc
mount_once "$root/dev" --rbind /dev
mount_once "$root/src" --bind "$repo"
mount -o remount,bind,ro "$root/src" 2>/dev/null || say "note: /src stays writable"
# The shipped jets beside the work tree (tests read /src/../shared/data).
if [ -d "$repo/../shared" ]; then
  mount_once "$root/shared" --bind "$repo/../shared"
  mount -o remount,bind,ro "$root/shared" 2>/dev/null
fi
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null
# The host's names (a local Slurm cluster's controller is this host, by its name).
cp /etc/hosts "$root/etc/hosts" 2>/dev/null

in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  LANG=C.UTF-8 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 /bin/bash -c "$1"; }

missing=$(in_root "dpkg-query -W -f='\${Package} \${Status}\n' ${packages[*]} 2>/dev/null |
  awk '\$NF==\"installed\"{print \$1}'" | sort | comm -13 - <(printf '%s\n' "${packages[@]}" | sort))
if [ -n "$missing" ]; then
  say "installing into the chroot: $(echo $missing)"
  in_root "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq &&
    apt-get install -y -qq --no-install-recommends $(echo $missing)" >"$root.apt.log" 2>&1 ||
    die "apt-get in the chroot failed; see $root.apt.log"
fi
version=$(in_root "dpkg-query -W -f='\${Version}' libtorch-dev")

if [ "$shell" = 1 ]; then
  chroot "$root" /bin/bash -l
  exit $?
fi

say "LibTorch $version, $(in_root 'g++ --version | head -1')"
in_root "cmake -S /src -B /build -DCMAKE_BUILD_TYPE=Release -DFOLDFARM_WITH_CUDA=OFF" \
  >"$root/build-configure.log" 2>&1 || { tail -20 "$root/build-configure.log"; die "configure failed"; }
targets=$(in_root "ctest --test-dir /build -N" | sed -n 's/^ *Test *#[0-9]*: *\([A-Za-z0-9_]*\).*/\1/p' |
  grep -E "$tests" | sort -u | tr '\n' ' ')
[ -n "$targets" ] || die "no test matches '$tests'"
say "building $targets($jobs jobs; log $root/build/make.log)"
t0=$(date +%s)
if ! in_root "cd /build && make -j$jobs $targets" >"$root/build/make.log" 2>&1; then
  grep -m 20 -E "error|Error" "$root/build/make.log"
  say "the build failed against LibTorch $version"
  exit 1
fi
say "built in $(($(date +%s) - t0)) s; running them"
regex="^($(echo $targets | tr ' ' '|'))\$"
in_root "cd /build && ctest --output-on-failure --timeout 900 -R '$regex'"
rc=$?
say "LibTorch $version: ctest exit $rc"
[ $rc -eq 0 ] || exit 1
