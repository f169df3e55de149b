#!/usr/bin/env bash
# Installs every Debian package foldfarm needs (idempotent), then configures and builds.
#   scripts/setup.sh [--build-dir DIR] [--no-build] [--debug] [--target T]...
# --target T: build only T (repeatable; default: everything, the tests included).
# Environment: FOLDFARM_JOBS (parallel compile jobs, default: nproc).
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=build
do_build=1
build_type=Release
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build_dir="$2"; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --debug) build_type=Debug; shift ;;
    --target) [ $# -ge 2 ] || { echo "setup.sh: --target needs a target name" >&2; exit 2; }
      targets+=(--target "$2"); shift 2 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

# libopenblas0-pthread matters: without it LibTorch uses the reference BLAS (~20x slower).
packages=(
  build-essential cmake ccache pkg-config git
  libtorch-dev libopenblas0-pthread
  libopenmpi-dev openmpi-bin
  libhdf5-dev zlib1g-dev nlohmann-json3-dev libgtest-dev libsqlite3-dev libcli11-dev libspdlog-dev
  slurmctld slurmd slurm-client munge
  gnuplot-nox chromium jq
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || {
      echo "setup: these Debian packages are missing and installing them needs root, but sudo is not installed: run this once as root (or install them: apt-get install ${missing[*]})" >&2
      exit 1
    }
    sudo_cmd="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's LibTorch must pick the pthread OpenBLAS (the alternatives system does this when
# it is installed; make sure it is the selected libblas).
blas=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3
if [ -e "$blas" ] && command -v update-alternatives >/dev/null; then
  cur=$(readlink -f /etc/alternatives/libblas.so.3-x86_64-linux-gnu 2>/dev/null || true)
  if [ "$cur" != "$(readlink -f $blas)" ]; then
    ${sudo_cmd:-} update-alternatives --set libblas.so.3-x86_64-linux-gnu "$blas" >/dev/null || true
  fi
fi

[ "$do_build" -eq 1 ] || exit 0
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.ccache}"
export CCACHE_BASEDIR="$PWD"
jobs="${FOLDFARM_JOBS:-$(nproc)}"
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE="$build_type" >/dev/null
cmake --build "$build_dir" -j "$jobs" ${targets[@]+"${targets[@]}"}
echo "setup: built $build_dir/apps/foldfarm/foldfarm" >&2
