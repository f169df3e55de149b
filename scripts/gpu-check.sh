#!/usr/bin/env bash
# One prepared run of foldfarm's GPU checks on a CUDA machine with PyTorch (docs/gpu.md):
#   scripts/gpu-check.sh OUTDIR [--dry-run]
# Steps, each timed and recorded in OUTDIR/summary.json even when one fails:
#   facts     nvidia-smi, nvcc, PyTorch, g++, cmake, glibc
#   deps      unpack .gpu-deps/*.deb (scripts/gpu-deps.sh) into a prefix, point CMake at it
#   configure CMake, Ninja, Release, CUDA LibTorch from PyTorch, NCCL from nvidia-nccl-cu13
#   build     foldfarm and the tests labelled gpu first (OUTDIR/build.log)
#   gate      the GPU kernels' and the graph replay's correctness tests, before any figure
#             is taken (OUTDIR/gate.log): a wrong kernel's speed means nothing
#   bench     bench pet: omnilearn pretrain, bf16 + fixed shapes beside the padded fp32
#             baseline at batch 256, 1024, 4096 (a run that does not fit the GPU is recorded
#             as out of memory); CUDA graphs at 256 and 1024; tiny chain-sized
#             models, 1, 2 and 4 trained side by side in one process; fp32 at 1024; last,
#             the observable MLP's fit on the GPU beside the same fit on the CPU, at the
#             chains' batch and a large one (OUTDIR/bench_pet.json)
#   campaign  tiny PET chains on one GPU with 1, 2, 4 tasks per GPU: chains/hour, GPU
#             memory per task process, fresh process vs persistent worker (campaign.json);
#             no MPS is started here: K > 1 shares the GPU by time-slicing
#   ctest     ctest -L gpu, then test_e2e_device (OUTDIR/ctest.log)
#   build_all every other target, with the time left (OUTDIR/build.log)
# The figures come before the tests: a build that takes most of the budget leaves the tests
# for a second call on the still-warm machine, `FF_STEPS=ctest scripts/gpu-check.sh OUT2`
# (the build, data and unpacked dependencies stay in FF_BUILD_DIR, FF_DATA_DIR and
# FF_DEPS_PREFIX; a skipped deps step takes its environment from FF_DEPS_PREFIX/env.sh).
# Everything printed also goes to OUTDIR/check.log. The whole run keeps within
# FF_BUDGET_S seconds (default 540): every command runs under `timeout`.
# --dry-run (or FF_GPU_CHECK_DRY=1): facts, deps and configure only, for a machine
# without a GPU (LibTorch from PyTorch when importable, else FF_TORCH_PREFIX, else
# -DFOLDFARM_WITH_TORCH=OFF).
# Environment (defaults): FF_BUDGET_S (540), FF_JOBS (nproc), FF_STEPS (all; e.g.
# "facts,deps,bench": only these), FF_DEPS (auto: the bundle when .gpu-deps/*.deb exist,
# else the image's packages; bundle; image), FF_DEPS_PREFIX (/tmp/ffdeps), FF_DEPS_PRUNE (1:
# the image's copy of a library wins when it has the soname), FF_BUILD_DIR (/tmp/ffbuild),
# FF_DATA_DIR (/tmp/ffdata), FF_PYTHON, FF_TORCH_PREFIX, FF_WITH_CUDA (ON; dry run AUTO),
# FF_CUDA_ARCH (90), FF_DEVICE (cuda; cpu: a smoke test of the bench and campaign steps),
# FF_BENCH_JETS (106496), FF_BENCH_BATCHES ("256 1024 4096"), FF_BENCH_FP32_BATCH (1024),
# FF_BENCH_PRESET (omnilearn), FF_BENCH_PRECISION (bf16; fp32 with FF_DEVICE=cpu), FF_BENCH_PARTICLES (150),
# FF_BENCH_STEPS (20), FF_BENCH_WARMUP (5), FF_BENCH_GRAPHS_BATCHES ("256 1024"; "" for none), FF_BENCH_MEMBERS ("1,2,4"; "" for none), FF_MEMBERS_BATCH (512),
# FF_CHAIN_EVENTS (10000), FF_CHAIN_PRECISION (fp32), FF_MLP_BATCHES ("256 4096"; "" for
# none), FF_MLP_THREADS (4: a task's CPU share with 4 tasks per GPU on 16 cores).
set -u -o pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out=""
dry=${FF_GPU_CHECK_DRY:-0}
for a in "$@"; do
  case "$a" in
    --dry-run) dry=1 ;;
    -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
    -*) echo "gpu-check.sh: unknown option '$a' (see --help)" >&2; exit 2 ;;
    *) out="$a" ;;
  esac
done
[ -n "$out" ] || { echo "usage: scripts/gpu-check.sh OUTDIR [--dry-run]" >&2; exit 2; }
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)

budget=${FF_BUDGET_S:-540}
jobs=${FF_JOBS:-$(nproc)}
prefix=${FF_DEPS_PREFIX:-/tmp/ffdeps}
build=${FF_BUILD_DIR:-/tmp/ffbuild}
data=${FF_DATA_DIR:-/tmp/ffdata}
arch=${FF_CUDA_ARCH:-90}
device=${FF_DEVICE:-cuda}
bench_jets=${FF_BENCH_JETS:-106496}  # 26 full batches of 4096 (5 warm-up + 20 timed steps + 1)
bench_batches=${FF_BENCH_BATCHES:-256 1024 4096}
bench_fp32_batch=${FF_BENCH_FP32_BATCH:-1024}
# Graphs not at 4096: a capture needs about twice an eager step's memory, beyond 80 GB there.
bench_graphs_batches=${FF_BENCH_GRAPHS_BATCHES-256 1024}
[ "$device" = cpu ] && bench_graphs_batches=""  # graphs need a GPU
bench_preset=${FF_BENCH_PRESET:-omnilearn}
bench_precision=${FF_BENCH_PRECISION:-$([ "$device" = cpu ] && echo fp32 || echo bf16)}  # bf16 needs a GPU
bench_particles=${FF_BENCH_PARTICLES:-150}
bench_steps=${FF_BENCH_STEPS:-20}
bench_warmup=${FF_BENCH_WARMUP:-5}
bench_members=${FF_BENCH_MEMBERS-1,2,4}  # "" for none
members_batch=${FF_MEMBERS_BATCH:-512}
mlp_batches=${FF_MLP_BATCHES-256 4096}  # "" for none
mlp_threads=${FF_MLP_THREADS:-4}
chain_events=${FF_CHAIN_EVENTS:-10000}
chain_precision=${FF_CHAIN_PRECISION:-fp32}
only_steps=${FF_STEPS:-}  # e.g. facts,deps,bench: run only these (the others: skipped)
ff=$build/apps/foldfarm/foldfarm        # hands every command run here to foldfarm-torch
ff_torch=$build/apps/foldfarm/foldfarm-torch
multiarch=x86_64-linux-gnu

log=$out/check.log
exec > >(tee -a "$log") 2>&1
tee_pid=$!
t_start=$(date +%s)

py=${FF_PYTHON:-}
if [ -z "$py" ]; then
  if [ -x /opt/torch/.venv/bin/python3 ]; then py=/opt/torch/.venv/bin/python3
  else py=$(command -v python3 || echo python3); fi
fi
# The interpreter's own bin first: pip puts cmake and ninja there, beside python.
case "$py" in */*) PATH="$(cd "$(dirname "$py")" && pwd):$PATH"; export PATH ;; esac

# ---------------------------------------------------------------- helpers
now_ms() { date +%s%3N; }
left() { echo $((budget - ($(date +%s) - t_start))); }
say() { printf '[gpu-check %4ds] %s\n' "$(($(date +%s) - t_start))" "$*"; }
json_str() {
  local s
  s=$(printf '%s' "$1" | tr -d '\000-\010\013\014\016-\037')
  s=${s//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\n'/\\n}; s=${s//$'\t'/\\t}; s=${s//$'\r'/}
  printf '"%s"' "$s"
}
# Runs a command under the current step's deadline (exit 124/137 when it runs past it).
step_deadline=0
t() {
  local rem=$((step_deadline - $(date +%s)))
  if [ "$rem" -lt 1 ]; then echo "gpu-check: no time left for: $*" >&2; return 124; fi
  timeout -k 10 "$rem" "$@"
}
# True when FILE holds one valid JSON document.
valid_json() { [ -s "$1" ] && "$py" -c 'import json,sys; json.load(open(sys.argv[1]))' "$1" 2>/dev/null; }

declare -A fact=()
steps_json=""
results_json=""
deps_json='{}'
current_step=""
add_result() { results_json+="${results_json:+,}$(json_str "$1"):$2"; }

git_commit=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)
git_dirty=null
if [ "$git_commit" != unknown ]; then
  if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    git_dirty=true; else git_dirty=false; fi
fi
write_summary() {
  local facts="" k
  for k in "${!fact[@]}"; do facts+="${facts:+,}$(json_str "$k"):$(json_str "${fact[$k]}")"; done
  {
    printf '{"script":"scripts/gpu-check.sh","dry_run":%s,' "$([ "$dry" = 1 ] && echo true || echo false)"
    printf '"started_unix":%s,"elapsed_s":%s,"budget_s":%s,"jobs":%s,' \
      "$t_start" "$(($(date +%s) - t_start))" "$budget" "$jobs"
    printf '"git":{"commit":%s,"dirty":%s},' "$(json_str "$git_commit")" "$git_dirty"
    printf '"paths":{"prefix":%s,"build":%s,"data":%s},' "$(json_str "$prefix")" \
      "$(json_str "$build")" "$(json_str "$data")"
    printf '"facts":{%s},"deps":%s,"steps":[%s],"results":{%s}}\n' "$facts" "$deps_json" \
      "$steps_json" "$results_json"
  } >"$out/summary.json.tmp" && mv "$out/summary.json.tmp" "$out/summary.json"
}

# step NAME CAP_S FUNCTION: runs FUNCTION with a deadline of min(CAP_S, time left - 15 s)
# and records its status: ok (0), skipped (the function returns 3 and sets step_note),
# timeout (124, 137), failed (anything else).
step_note=""
step() {
  local name=$1 cap=$2 fn=$3 rem t0 rc status secs
  rem=$(($(left) - 15))
  step_note=""
  if [ "$rem" -lt 10 ]; then
    say "== $name: skipped (no time left)"
    steps_json+="${steps_json:+,}{\"name\":$(json_str "$name"),\"status\":\"skipped\",\"rc\":null,\"seconds\":0,\"note\":\"no time left\"}"
    write_summary
    return 0
  fi
  [ "$cap" -gt "$rem" ] && cap=$rem
  step_deadline=$(($(date +%s) + cap))
  current_step=$name
  say "== $name (up to ${cap}s)"
  t0=$(now_ms)
  "$fn"
  rc=$?
  secs=$(awk -v a="$t0" -v b="$(now_ms)" 'BEGIN{printf "%.1f", (b-a)/1000}')
  case $rc in
    0) status=ok ;;
    3) status=skipped ;;
    124|137) status=timeout ;;
    *) status=failed ;;
  esac
  say "== $name: $status (rc $rc, ${secs}s)${step_note:+: $step_note}"
  steps_json+="${steps_json:+,}{\"name\":$(json_str "$name"),\"status\":\"$status\",\"rc\":$rc,\"seconds\":$secs,\"note\":$(json_str "$step_note")}"
  current_step=""
  write_summary
  return 0
}
skip_step() { step_note=$1; steps_json+="${steps_json:+,}{\"name\":$(json_str "$2"),\"status\":\"skipped\",\"rc\":null,\"seconds\":0,\"note\":$(json_str "$1")}"; say "== $2: skipped ($1)"; write_summary; }

on_signal() {
  say "interrupted (signal) during ${current_step:-no step}"
  steps_json+="${steps_json:+,}{\"name\":$(json_str "${current_step:-signal}"),\"status\":\"interrupted\",\"rc\":null,\"seconds\":0,\"note\":\"signal\"}"
  write_summary
  exit 130
}
trap on_signal TERM INT HUP

# ---------------------------------------------------------------- a. facts
do_facts() {
  local v
  say "host $(hostname 2>/dev/null), $(nproc) cores, $(free -g 2>/dev/null | awk '/^Mem:/{print $2" GiB"}')"
  fact[os]=$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-?}")
  fact[cores]=$(nproc)
  fact[glibc]=$(ldd --version 2>/dev/null | head -1 | awk '{print $NF}')
  if command -v nvidia-smi >/dev/null; then
    t nvidia-smi
    v=$(t nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>/dev/null | head -1)
    fact[gpu]=$v
  else
    say "no nvidia-smi"; fact[gpu]="none"
  fi
  local nvcc
  nvcc=$(command -v nvcc || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; } || true)
  if [ -n "$nvcc" ]; then
    "$nvcc" --version
    fact[nvcc]=$("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')
  else fact[nvcc]="none"; fi
  v=$(t "$py" -c 'import torch; c=torch.cuda.is_available(); print(torch.__version__, torch.version.cuda, c, torch.cuda.get_device_name(0) if c else "-", "cxx11abi=%s" % getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", "?"), sep="|")' 2>&1 | tail -1)
  say "python $py: torch|cuda|available|device|abi = $v"
  fact[torch]=$v
  # The kernels link nvcc's CUDA runtime beside PyTorch's: another major version than
  # PyTorch's (nvcc 13, torch cu12x) needs a driver for both, or every kernel launch fails.
  local torch_cuda_major nvcc_major
  torch_cuda_major=$(echo "$v" | awk -F'|' '{print $2}' | cut -d. -f1)
  nvcc_major=$(echo "${fact[nvcc]}" | cut -d. -f1)
  if [ -n "$torch_cuda_major" ] && [ "$nvcc_major" != none ] && [ -n "$nvcc_major" ] &&
     [ "$torch_cuda_major" != "$nvcc_major" ]; then
    say "WARNING: nvcc is CUDA ${fact[nvcc]}, PyTorch's CUDA is $(echo "$v" | awk -F'|' '{print $2}'): the kernels' runtime and PyTorch's differ in major version"
    fact[cuda_mismatch]="nvcc ${fact[nvcc]} vs torch $(echo "$v" | awk -F'|' '{print $2}')"
  fi
  if command -v nvidia-smi >/dev/null; then
    # Exclusive_Process lets one process hold the GPU: K > 1 tasks per GPU cannot share it.
    fact[compute_mode]=$(t nvidia-smi --query-gpu=compute_mode,mig.mode.current --format=csv,noheader 2>/dev/null | head -1)
    say "compute mode, MIG: ${fact[compute_mode]}"
  fi
  fact[python]=$("$py" --version 2>&1)
  fact[gxx]=$(g++ --version 2>/dev/null | head -1)
  fact[cmake]=$(cmake --version 2>/dev/null | head -1)
  fact[ninja]=$(ninja --version 2>/dev/null || echo none)
  printf '%s\n' "${fact[gxx]}" "${fact[cmake]}" "ninja ${fact[ninja]}" "glibc ${fact[glibc]}" "${fact[os]}"
  return 0
}

# ---------------------------------------------------------------- b. deps
# Sets: cmake_dep_args (array), env (PATH, LD_LIBRARY_PATH, OPAL_*, PMIX_*, OMPI_*).
cmake_dep_args=()
fmt_first=""
deps_mode=image
find_cfg() {  # find_cfg NAME: the folder of NAMEConfig.cmake / name-config.cmake in the prefix
  local f
  f=$(find "$prefix/usr" \( -name "$1Config.cmake" -o -name "$1-config.cmake" \) 2>/dev/null | head -1)
  [ -n "$f" ] && dirname "$f"
}
do_deps() {
  local mode=${FF_DEPS:-auto} debs=() d n
  shopt -s nullglob
  debs=("$repo"/.gpu-deps/*.deb)
  shopt -u nullglob
  if [ "$mode" = auto ]; then
    if [ ${#debs[@]} -gt 0 ]; then mode=bundle; else mode=image; fi
  fi
  deps_mode=$mode
  if [ "$mode" = image ]; then
    say "deps: the image's packages (no .gpu-deps/*.deb, or FF_DEPS=image)"
    if [ -d /usr/include/fmt ]; then
      fmt_first=$prefix/fmtfirst
      mkdir -p "$fmt_first" && ln -sfn /usr/include/fmt "$fmt_first/fmt"
    fi
    deps_json="{\"mode\":\"image\"}"
    step_note="image"
    return 0
  fi
  [ ${#debs[@]} -gt 0 ] || { say "deps: FF_DEPS=bundle but no .gpu-deps/*.deb"; return 1; }
  say "deps: unpacking ${#debs[@]} .deb files into $prefix"
  rm -rf "$prefix" && mkdir -p "$prefix" || return 1
  for d in "${debs[@]}"; do
    if command -v dpkg-deb >/dev/null; then
      dpkg-deb -x "$d" "$prefix" || { say "deps: dpkg-deb -x failed on $d"; return 1; }
    else  # ar + tar: data.tar.xz (bookworm) or .zst
      (cd "$prefix" && ar p "$d" "$(ar t "$d" | grep '^data\.tar')" | tar -x -J -f - ) ||
        { say "deps: ar/tar failed on $d"; return 1; }
    fi
  done
  # Absolute links (libz.so -> /lib/...) point into the prefix.
  while IFS= read -r -d '' l; do
    d=$(readlink "$l")
    [ -e "$prefix$d" ] && ln -sfn "$prefix$d" "$l"
  done < <(find "$prefix" -type l -lname '/*' -print0)
  # Debian's alternatives (mpirun -> mpirun.openmpi) are made by postinst scripts.
  for d in "$prefix"/usr/bin/*.openmpi; do
    n=$(basename "$d" .openmpi)
    [ -e "$prefix/usr/bin/$n" ] || ln -s "$(basename "$d")" "$prefix/usr/bin/$n"
  done

  # Run-time libraries: one link per soname in $prefix/runlib (which also finds libraries
  # in private folders, e.g. libpsm1/), except those the image already has (its copy is
  # newer and what its other programs use) unless FF_DEPS_PRUNE=0.
  local have=" " runlib=$prefix/runlib pruned=() kept=0 so f
  if [ "${FF_DEPS_PRUNE:-1}" = 1 ]; then
    have+=$( (ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null) |
             awk '/x86-64/{print $1}' | sort -u | tr '\n' ' ')
  fi
  mkdir -p "$runlib"
  # "FILE SONAME" for every shared library but the Open MPI and PMIx plugins (one readelf).
  find "$prefix/lib" "$prefix/usr/lib" -type f -name '*.so*' \
    -not -path '*/openmpi/lib/openmpi3/*' -not -path '*/pmix2/lib/pmix/*' -print0 2>/dev/null |
    xargs -0 readelf -d 2>/dev/null |
    awk '/^File: /{f=$2} /\(SONAME\)/{so=$0; sub(/.*\[/,"",so); sub(/\].*/,"",so); print f, so}' \
    >"$prefix/sonames.txt"
  while read -r f so; do
    case "$so" in  # the dependencies proper: always the bundle's (plugins match their version)
      libmpi*|libopen-pal*|libopen-rte*|libmca_*|libompi*|liboshmem*|libpmix*|libhdf5*|libsz*|libaec*|libspdlog*|libfmt*) ;;
      *) if [[ "$have" == *" $so "* ]]; then pruned+=("$so"); continue; fi ;;
    esac
    [ -e "$runlib/$so" ] || { ln -s "$f" "$runlib/$so"; kept=$((kept + 1)); }
  done <"$prefix/sonames.txt"
  say "deps: $kept bundled libraries in $runlib; the image's copy used for ${#pruned[@]}: ${pruned[*]:-none}"

  local ompi=$prefix/usr/lib/$multiarch/openmpi pmix=$prefix/usr/lib/$multiarch/pmix2
  export PATH=$prefix/usr/bin:$PATH
  export LD_LIBRARY_PATH=$runlib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  # Open MPI and PMIx relocated (their install paths are compiled in; these override them,
  # and PMIx's default parameter file names its plugin folder).
  sed -i "s|/usr/lib/$multiarch/pmix2|$pmix|g" "$pmix/share/pmix-mca-params.conf" 2>/dev/null
  export OPAL_PREFIX=$prefix/usr OPAL_EXEC_PREFIX=$prefix/usr OPAL_BINDIR=$prefix/usr/bin
  export OPAL_LIBDIR=$ompi/lib OPAL_INCLUDEDIR=$ompi/include OPAL_PKGLIBDIR=$ompi/lib/openmpi3
  export OPAL_DATAROOTDIR=$prefix/usr/share OPAL_DATADIR=$prefix/usr/share
  export OPAL_PKGDATADIR=$prefix/usr/share/openmpi OPAL_SYSCONFDIR=$prefix/etc/openmpi
  export OPAL_LIBEXECDIR=$prefix/usr/libexec
  export PMIX_PREFIX=$pmix PMIX_INSTALL_PREFIX=$pmix PMIX_EXEC_PREFIX=$pmix
  export PMIX_LIBDIR=$pmix/lib PMIX_PKGLIBDIR=$pmix/lib/pmix PMIX_DATADIR=$pmix/share
  export PMIX_PKGDATADIR=$pmix/share/pmix PMIX_SYSCONFDIR=$pmix/share
  # One node: shared memory between ranks, no UCX/OFI probing; no ssh needed to start.
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader OMPI_MCA_btl_base_warn_component_unused=0
  command -v ssh >/dev/null || command -v rsh >/dev/null || export OMPI_MCA_plm=isolated

  # Check that the bundled programs and libraries load (else keep every bundled library).
  local bad
  check_loads() {
    { for f in "$runlib"/* "$prefix/usr/bin/orterun" "$prefix/usr/bin/orted"; do
        ldd "$f" 2>&1 | grep 'not found' | sed "s|^|$(basename "$f"): |"
      done; } | sort -u
  }
  bad=$(check_loads)
  if [ -n "$bad" ] && [ ${#pruned[@]} -gt 0 ]; then
    say "deps: with the image's copies some libraries do not load:"; printf '%s\n' "$bad"
    say "deps: using every bundled library instead"
    while read -r f so; do [ -e "$runlib/$so" ] || ln -s "$f" "$runlib/$so"; done \
      <"$prefix/sonames.txt"
    pruned=()
    bad=$(check_loads)
  fi
  if [ -n "$bad" ]; then say "deps: still unresolved:"; printf '%s\n' "$bad"; fi
  if t "$prefix/usr/bin/mpirun" --version 2>&1 | head -2; then :; else say "deps: mpirun --version failed"; fi

  # The same environment for later commands by hand: . $prefix/env.sh
  { for v in PATH LD_LIBRARY_PATH $(compgen -e | grep -E '^(OPAL_|PMIX_|OMPI_)'); do
      printf 'export %s=%q\n' "$v" "${!v}"; done; } >"$prefix/env.sh"
  fmt_first=$prefix/fmtfirst
  mkdir -p "$fmt_first" && ln -sfn "$prefix/usr/include/fmt" "$fmt_first/fmt"
  local L=$prefix/usr/lib/$multiarch
  cmake_dep_args=(
    "-DCMAKE_LIBRARY_PATH=$L"
    "-DCMAKE_INCLUDE_PATH=$prefix/usr/include"
    "-Dnlohmann_json_DIR=$(find_cfg nlohmann_json)"
    "-Dspdlog_DIR=$(find_cfg spdlog)"
    "-Dfmt_DIR=$(find_cfg fmt)"
    "-DCLI11_DIR=$(find_cfg CLI11)"
    "-DGTest_DIR=$(find_cfg GTest)"
    "-DSQLite3_INCLUDE_DIR=$prefix/usr/include"
    "-DSQLite3_LIBRARY=$L/libsqlite3.so"
    "-DZLIB_INCLUDE_DIR=$prefix/usr/include"
    "-DZLIB_LIBRARY=$L/libz.so"
    # FindHDF5 without the h5cc wrapper: Debian's serial tree has include/ and libhdf5.so.
    "-DHDF5_ROOT=$L/hdf5/serial"
    "-DHDF5_NO_FIND_PACKAGE_CONFIG_FILE=ON"
    # FindMPI without a wrapper: what Debian's mpicxx -showme says, relocated.
    "-DMPI_CXX_SKIP_MPICXX=OFF"
    "-DMPI_CXX_LIB_NAMES=mpi_cxx;mpi"
    "-DMPI_mpi_LIBRARY=$ompi/lib/libmpi.so"
    "-DMPI_mpi_cxx_LIBRARY=$ompi/lib/libmpi_cxx.so"
    "-DMPI_CXX_HEADER_DIR=$ompi/include"
    "-DMPI_CXX_ADDITIONAL_INCLUDE_DIRS=$ompi/include/openmpi"
    "-DMPIEXEC_EXECUTABLE=$prefix/usr/bin/mpirun"
    "-DMPIRUN_EXECUTABLE=$prefix/usr/bin/mpirun"
  )
  deps_json="{\"mode\":\"bundle\",\"debs\":${#debs[@]},\"bundled_libraries\":$kept,\"image_libraries\":[$(
    for so in "${pruned[@]}"; do printf '%s,' "$(json_str "$so")"; done | sed 's/,$//')],\"unresolved\":$(json_str "$bad")}"
  step_note="bundle: ${#debs[@]} debs, $kept bundled libraries, ${#pruned[@]} from the image"
  [ -z "$bad" ]
}

# ---------------------------------------------------------------- c. configure + build
torch_prefix=""
do_configure() {
  local args=() nvcc nccl with_torch=ON with_cuda
  torch_prefix=${FF_TORCH_PREFIX:-}
  if [ -z "$torch_prefix" ]; then
    torch_prefix=$(t "$py" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null | tail -1)
  fi
  if [ -z "$torch_prefix" ]; then
    if [ "$dry" = 1 ]; then
      say "configure: no PyTorch and no FF_TORCH_PREFIX: -DFOLDFARM_WITH_TORCH=OFF (dry run)"
      with_torch=OFF
    else
      say "configure: $py cannot import torch"; return 1
    fi
  fi
  with_cuda=${FF_WITH_CUDA:-$([ "$dry" = 1 ] && echo AUTO || echo ON)}
  nvcc=$(command -v nvcc || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; } || true)
  [ -n "$nvcc" ] && args+=("-DCMAKE_CUDA_COMPILER=$nvcc")
  # NCCL from PyTorch's nvidia-nccl-cu13 wheel (a namespace package: use __path__).
  nccl=$(t "$py" -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null | tail -1)
  if [ -n "$nccl" ] && [ -f "$nccl/include/nccl.h" ]; then
    local lib
    lib=$(ls "$nccl"/lib/libnccl.so "$nccl"/lib/libnccl.so.2 2>/dev/null | head -1)
    args+=("-DNCCL_HOME=$nccl" "-DNCCL_INCLUDE_DIR=$nccl/include")
    [ -n "$lib" ] && args+=("-DNCCL_LIBRARY=$lib")
    say "configure: NCCL from $nccl (${lib:-no libnccl.so*})"
  else
    say "configure: no nvidia.nccl in $py; CMake searches NCCL_HOME=${NCCL_HOME:-} and /usr/local/cuda"
  fi
  # cuDNN from PyTorch's nvidia-cudnn wheel: a CUDA PyTorch's CMake package stops ("uses cuDNN
  # but I cannot find the cuDNN libraries") where it finds none, and the wheel holds only
  # libcudnn.so.9, which find_library does not take for "cudnn".
  local cudnn
  cudnn=$(t "$py" -c 'import nvidia.cudnn as m; print(list(m.__path__)[0])' 2>/dev/null | tail -1)
  if [ -n "$cudnn" ] && [ -f "$cudnn/include/cudnn.h" ]; then
    local clib
    clib=$(ls "$cudnn"/lib/libcudnn.so "$cudnn"/lib/libcudnn.so.[0-9]* 2>/dev/null | head -1)
    args+=("-DCUDNN_INCLUDE_PATH=$cudnn/include")
    [ -n "$clib" ] && args+=("-DCUDNN_LIBRARY_PATH=$clib")
    say "configure: cuDNN from $cudnn (${clib:-no libcudnn.so*})"
  else
    say "configure: no nvidia.cudnn in $py; PyTorch's CMake package searches CUDNN_ROOT and the CUDA toolkit"
  fi
  local cpp="$prefix/usr"
  [ "$deps_mode" = bundle ] || cpp=""
  [ -n "$torch_prefix" ] && cpp="${cpp:+$cpp;}$torch_prefix"
  command -v ninja >/dev/null && args+=(-G Ninja)
  [ -n "$fmt_first" ] && args+=("-DCMAKE_CXX_FLAGS=-I$fmt_first")
  if [ -f "$build/CMakeCache.txt" ] && ! grep -q "^CMAKE_HOME_DIRECTORY:INTERNAL=$repo\$" "$build/CMakeCache.txt"; then
    say "configure: $build was configured for another source tree; removing it"
    rm -rf "$build"
  fi
  say "configure: cmake -S $repo -B $build (Torch $with_torch, CUDA $with_cuda)"
  {
    echo "== configure $(date -u +%FT%TZ)"
    t cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release \
      ${cpp:+"-DCMAKE_PREFIX_PATH=$cpp"} \
      -DFOLDFARM_WITH_TORCH=$with_torch -DFOLDFARM_WITH_CUDA="$with_cuda" \
      -DFOLDFARM_CUDA_ARCHITECTURES="$arch" -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
      "${cmake_dep_args[@]}" "${args[@]}"
  } >>"$out/build.log" 2>&1
  local rc=$?
  grep -E "foldfarm:|HDF5|MPI|Found|CUDA|NCCL|Torch|Error|error" "$out/build.log" | tail -40
  say "configure: what CMake resolved (CMakeCache.txt):"
  grep -E "^(HDF5_C_INCLUDE_DIR|HDF5_hdf5_LIBRARY_RELEASE|HDF5_C_LIBRARY_hdf5|MPI_mpi_LIBRARY|MPI_mpi_cxx_LIBRARY|MPI_CXX_HEADER_DIR|MPIRUN_EXECUTABLE|spdlog_DIR|fmt_DIR|nlohmann_json_DIR|CLI11_DIR|GTest_DIR|SQLite3_LIBRARY|SQLite3_INCLUDE_DIR|ZLIB_LIBRARY(_RELEASE)?|ZLIB_INCLUDE_DIR|Torch_DIR|NCCL_LIBRARY|NCCL_INCLUDE_DIR|CUDART_LIBRARY|CMAKE_CUDA_COMPILER|CMAKE_CXX_COMPILER|CMAKE_GENERATOR)(:[A-Z]*)?=" \
    "$build/CMakeCache.txt" 2>/dev/null | sed 's/^/  /'
  if [ $rc -ne 0 ]; then say "configure failed (rc $rc); last lines of build.log:"; tail -40 "$out/build.log"; fi
  return $rc
}

key_targets() {  # foldfarm, every test labelled gpu (ff_add_test: test = target) and test_e2e_device
  local tg gpu_tests
  gpu_tests=$(ctest --test-dir "$build" -N -L gpu 2>/dev/null | sed -n 's/^ *Test *#[0-9]*: *\([A-Za-z0-9_]*\).*/\1/p')
  for tg in foldfarm $gpu_tests test_e2e_device; do
    if [ -f "$build/build.ninja" ]; then
      grep -q "^build $tg:" "$build/build.ninja" && echo "$tg"
    else echo "$tg"; fi
  done
}
do_build() {
  local targets
  targets=$(key_targets | tr '\n' ' ')
  [ -n "$targets" ] || { say "build: no targets"; return 1; }
  say "build: $targets(-j $jobs)"
  # shellcheck disable=SC2086
  { echo "== build $targets$(date -u +%FT%TZ)"
    if [ -f "$build/build.ninja" ]; then  # -k 0: a failing test program leaves foldfarm built
      t cmake --build "$build" -j "$jobs" --target $targets -- -k 0
    else t cmake --build "$build" -j "$jobs" --target $targets -- -k; fi; } >>"$out/build.log" 2>&1
  local rc=$?
  if [ $rc -ne 0 ]; then say "build failed (rc $rc); errors:"; grep -E "error|Error|FAILED" "$out/build.log" | head -40; tail -20 "$out/build.log"; fi
  if [ -x "$ff_torch" ]; then
    say "build: libraries foldfarm-torch loads from the prefix, or missing:"
    ldd "$ff_torch" | grep -E "$prefix|not found|torch|nccl|cudart" | sed 's/^/  /'
  fi
  return $rc
}
do_build_all() {
  { echo "== build all $(date -u +%FT%TZ)"
    if [ -f "$build/build.ninja" ]; then t cmake --build "$build" -j "$jobs" -- -k 0
    else t cmake --build "$build" -j "$jobs" -- -k; fi; } >>"$out/build.log" 2>&1
  local rc=$?
  if [ $rc -ne 0 ]; then say "build_all failed (rc $rc):"; grep -E "FAILED|error:" "$out/build.log" | head -30; fi
  step_note="$(grep -c '^FAILED' "$out/build.log" 2>/dev/null) failed edges in build.log"
  return $rc
}

# ---------------------------------------------------------------- c'. gate
# The kernels' and the graph replay's correctness, right after the build (seconds): the
# figures that follow are of code known to compute the right thing, even when the budget
# leaves the full ctest step for a second call.
do_gate() {
  export FOLDFARM_GPU_CHECK=1
  local rc=0 bin
  {
    echo "== gate $(date -u +%FT%TZ)"
    bin=$build/tests/model/test_model_gpu_kernels
    if [ -x "$bin" ]; then t "$bin" || rc=$?; else echo "gate: no $bin"; rc=1; fi
    bin=$build/tests/model/test_model_gpu_train
    if [ -x "$bin" ]; then
      t "$bin" --gtest_filter='GpuGraphs.ReplayEqualsTheEagerStep:GpuTrainer.ThreeStepsOnTheGpuEqualThreeOnTheCpu' || rc=$?
    else echo "gate: no $bin"; rc=1; fi
  } >"$out/gate.log" 2>&1
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[ +(OK|FAILED|SKIPPED) \]|gate:" "$out/gate.log"
  step_note="$(grep -c '^\[       OK \]' "$out/gate.log") passed, $(grep -c '^\[  FAILED  \] [A-Za-z]' "$out/gate.log") failed"
  return $rc
}

# ---------------------------------------------------------------- d. ctest
do_ctest() {
  export FOLDFARM_GPU_CHECK=1
  local rc rc2
  {
    echo "== ctest -L gpu $(date -u +%FT%TZ)"
    t ctest --test-dir "$build" -L gpu --output-on-failure --timeout 240
  } >"$out/ctest.log" 2>&1
  rc=$?
  {
    echo "== ctest -R ^test_e2e_device\$ $(date -u +%FT%TZ)"
    t ctest --test-dir "$build" -R '^test_e2e_device$' --output-on-failure --timeout 240
  } >>"$out/ctest.log" 2>&1
  rc2=$?
  grep -E "tests passed|tests failed|Test +#|\*\*\*|Skipped|SKIPPED|Not Run" "$out/ctest.log"
  step_note="gpu: $(grep -E 'tests passed' "$out/ctest.log" | head -1 | sed 's/^ *//'); e2e_device: $(grep -E 'tests passed' "$out/ctest.log" | sed -n 2p | sed 's/^ *//')"
  [ $rc -ne 0 ] && return $rc
  return $rc2
}

# ---------------------------------------------------------------- e. bench pet
do_bench() {
  [ -x "$ff_torch" ] || { step_note="no foldfarm-torch binary"; return 3; }
  mkdir -p "$data"
  local f=$data/pretrain.h5 b rc=0 part r
  if [ ! -s "$f" ]; then
    t "$ff" --log-level warn data synth --kind pretrain --jets "$bench_jets" \
      --particles "$bench_particles" --seed 1 --threads "$jobs" --out "$f.tmp" --overwrite &&
      mv "$f.tmp" "$f" || { r=$?; say "bench: data synth failed (rc $r)"; return $r; }
  fi
  say "bench: $(du -h "$f" | cut -f1) of pretraining jets"
  rm -f "$data"/bench_cmp_*.json "$data"/bench_fp32_*.json "$data"/bench_graphs_*.json \
    "$data"/bench_members.json "$data"/bench_mlp_*.json
  # One process per batch size: a failure (memory, time) loses one figure, not all.
  # Each run reads only the jets its batches take (warm-up + timed steps, one batch spare).
  need() { local n=$(( ($1) * (bench_steps + bench_warmup + 1) )); [ "$n" -gt "$bench_jets" ] && n=$bench_jets; echo "$n"; }
  for b in $bench_batches; do
    part=$data/bench_cmp_$b.json
    say "bench: $bench_preset pretrain $bench_precision fixed shapes, batch $b, beside the padded fp32 baseline"
    t "$ff" --log-level warn bench pet --preset "$bench_preset" --mode pretrain --data "$f" \
      --max-jets "$(need "$b")" --device "$device" --precision "$bench_precision" --fixed-shapes \
      --batches "$b" --steps "$bench_steps" --warmup "$bench_warmup" --compare --threads 8 \
      --json >"$part"
    r=$?
    [ $r -ne 0 ] && rc=$r
    valid_json "$part" || say "bench: batch $b failed (rc $r)"
  done
  # The same step replayed from CUDA graphs (each shape warmed up and captured untimed).
  for b in $bench_graphs_batches; do
    part=$data/bench_graphs_$b.json
    say "bench: $bench_preset pretrain $bench_precision CUDA graphs, batch $b"
    t "$ff" --log-level warn bench pet --preset "$bench_preset" --mode pretrain --data "$f" \
      --max-jets "$(need "$b")" --device "$device" --precision "$bench_precision" --cuda-graphs \
      --batches "$b" --steps "$bench_steps" --warmup "$bench_warmup" --threads 8 \
      --json >"$part"
    r=$?
    [ $r -ne 0 ] && rc=$r
    valid_json "$part" || say "bench: graphs batch $b failed (rc $r)"
  done
  # Chain-sized models side by side in one process (tiny preset, classifier, the chains'
  # batch): the total jets/s of 1, 2 and 4 members, beside the tasks-per-GPU figures.
  if [ -n "$bench_members" ]; then
    part=$data/bench_members.json
    say "bench: tiny classifier batch $members_batch, members $bench_members side by side in one process"
    t "$ff" --log-level warn bench pet --preset tiny --mode classifier --data "$f" \
      --max-jets "$(need "$members_batch")" --device "$device" --precision "$chain_precision" \
      --batch "$members_batch" --members "$bench_members" --steps "$bench_steps" \
      --warmup "$bench_warmup" --threads 8 --json >"$part"
    r=$?
    [ $r -ne 0 ] && rc=$r
    valid_json "$part" || say "bench: members failed (rc $r)"
  fi
  b=$bench_fp32_batch
  part=$data/bench_fp32_$b.json
  say "bench: $bench_preset pretrain fp32, batch $b"
  t "$ff" --log-level warn bench pet --preset "$bench_preset" --mode pretrain --data "$f" \
    --max-jets "$(need "$b")" --device "$device" --precision fp32 --batches "$b" \
    --steps "$bench_steps" --warmup "$bench_warmup" --threads 8 --json >"$part"
  r=$?
  [ $r -ne 0 ] && rc=$r
  valid_json "$part" || say "bench: fp32 batch $b failed (rc $r)"
  # Last, the least needed figure: the observable MLP (mlp and pet+mlp chains) on the GPU,
  # beside the same fit on the CPU with a task's share of the cores: a chain step's rows
  # (MC + data events), 5 epochs.
  for b in $mlp_batches; do
    part=$data/bench_mlp_$b.json
    say "bench: observable MLP, $((2 * chain_events)) rows, batch $b, $device beside the CPU ($mlp_threads threads)"
    t "$ff" --log-level warn bench mlp --device "$device" --rows "$((2 * chain_events))" \
      --batch "$b" --threads "$mlp_threads" --compare --json >"$part"
    r=$?
    [ $r -ne 0 ] && rc=$r
    valid_json "$part" || say "bench: mlp batch $b failed (rc $r)"
  done
  # {"compare": {"256": bench pet's JSON, …}, "graphs": {…}, "fp32": {"1024": …}, "summary": {…}}
  "$py" - "$data" "$out/bench_pet.json" <<'EOF'
import json, sys, os, glob, re
d, dst = sys.argv[1], sys.argv[2]
def load(p):
    try:
        with open(p) as f: return json.load(f)
    except Exception: return None
def runs(prefix):
    found = {}
    for p in glob.glob(os.path.join(d, prefix + "*.json")):
        found[re.sub(r"\D", "", os.path.basename(p)[len(prefix):])] = load(p)
    return dict(sorted(found.items(), key=lambda kv: int(kv[0] or 0)))
res = {"compare": runs("bench_cmp_"), "graphs": runs("bench_graphs_"), "fp32": runs("bench_fp32_"),
       "members": load(os.path.join(d, "bench_members.json")), "mlp": runs("bench_mlp_")}
keys = ("jets_per_s", "step_ms", "achieved_tflops", "fraction_of_peak", "peak_memory_mb",
        "peak_reserved_mb", "device_memory_mb", "error", "baseline_jets_per_s", "baseline_step_ms",
        "baseline_achieved_tflops", "baseline_peak_memory_mb", "baseline_error", "speedup",
        "cuda_graphs_captured")
summary = {}
for run in ((res["members"] or {}).get("runs") or []):
    summary[f"members_{run['members']}"] = {k: run.get(k) for k in
        ("jets_per_s", "step_ms", "members_speedup", "peak_memory_mb", "device_memory_mb") if k in run}
for b, j in res["mlp"].items():
    if j and j.get("fit"):
        summary[f"mlp_{b}"] = {"epoch_s": j["fit"].get("epoch_s"), "step_ms": j["fit"].get("step_ms"),
                               "cpu_epoch_s": (j.get("cpu") or {}).get("epoch_s"),
                               "speedup_vs_cpu": j.get("speedup_vs_cpu"),
                               "max_logit_difference": j.get("max_logit_difference")}
    else:
        summary[f"mlp_{b}"] = None
for kind, group in res.items():
    if kind in ("members", "mlp"): continue
    for b, j in group.items():
        r = (j.get("runs") or [{}])[0] if j else None
        summary[f"{kind}_{b}"] = {k: r.get(k) for k in keys if k in r} if r else None
res["summary"] = summary
with open(dst, "w") as fo: json.dump(res, fo, indent=1)
print(json.dumps(summary, indent=1))
EOF
  add_result bench "$("$py" -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["summary"]))' "$out/bench_pet.json" 2>/dev/null || echo null)"
  return $rc
}

# ---------------------------------------------------------------- f. campaign
sample_gpu_apps() {  # sample_gpu_apps FILE: one line per second while the caller's job runs
  while sleep 1; do
    printf '%s ' "$(date +%s)"
    nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader 2>/dev/null | tr '\n' ';'
    echo
  done >>"$1"
}
do_campaign() {
  [ -x "$ff_torch" ] || { step_note="no foldfarm-torch binary"; return 3; }
  local c=$data/campaign rc=0
  rm -rf "$c"; mkdir -p "$c"
  t "$ff" --log-level warn data synth --kind unfold --tune sim --events "$chain_events" --seed 11 \
    --threads "$jobs" --out "$c/mc.h5" &&
  t "$ff" --log-level warn data synth --kind unfold --tune data --events "$chain_events" --seed 12 \
    --threads "$jobs" --out "$c/data.h5" || { rc=$?; say "campaign: data synth failed (rc $rc)"; return $rc; }
  local cfg
  cfg=$(printf '{"classifier":"pet","preset":"tiny","epochs":2,"patience":2,"batch_size":512,"device":"%s","precision":"%s"}' "$device" "$chain_precision")
  printf '%s\n' "$cfg" >"$c/chain.json"
  # A fresh process: one chain with `foldfarm unfold`.
  say "campaign: one chain in a fresh process (foldfarm unfold)"
  local t0 fresh_s est
  t0=$(now_ms)
  t "$ff" --log-level warn unfold --mc "$c/mc.h5" --data "$c/data.h5" --init none --out "$c/fresh" \
    --replica 0 --member 0 --config "$c/chain.json" --iterations 2 --threads 8 >"$c/fresh.json"
  rc=$?
  if [ $rc -eq 0 ]; then
    fresh_s=$(awk -v a="$t0" -v b="$(now_ms)" 'BEGIN{printf "%.2f", (b-a)/1000}')
    est=$fresh_s
    say "campaign: fresh-process chain ${fresh_s}s"
  else  # the campaigns still run (their chains are sized for 20 s each)
    say "campaign: the fresh chain failed (rc $rc)"
    fresh_s=null est=20
  fi
  # Campaigns with K tasks per GPU; chains per campaign sized to the time left (8 at most).
  local k n per_k spec dir t1 secs entries="" threads resources
  for k in 1 2 4; do
    per_k=$(( (step_deadline - $(date +%s) - 10) / (k == 1 ? 3 : (k == 2 ? 2 : 1)) ))
    n=$(awk -v b="$per_k" -v f="$est" -v k="$k" 'BEGIN{
      slow = (k == 1) ? 1.0 : (k == 2 ? 1.4 : 2.2); n = k * int(b / (f * slow)); if (n > 8) n = 8;
      print n}')
    # K=1 runs at least 2 chains when it can: a worker's later chains show its start-up saved.
    if [ "$k" = 1 ] && [ "$n" -lt 2 ] && awk -v b="$per_k" -v f="$est" 'BEGIN{exit !(b > 1.3 * f)}'; then n=2; fi
    if [ "$n" -lt "$k" ]; then say "campaign: no time left for K=$k"; entries+="${entries:+,}\"$k\":null"; continue; fi
    dir=$c/k$k
    spec=$c/spec_k$k.json
    threads=$((jobs / k)); [ "$threads" -gt 8 ] && threads=8; [ "$threads" -lt 1 ] && threads=1
    resources="\"gpus\":1,\"tasks_per_gpu\":$k,\"threads_per_task\":$threads"
    [ "$device" = cpu ] && resources="\"cpu_slots\":$k,\"threads_per_task\":1"  # a CPU smoke test
    printf '{"name":"gpucheck-k%s","task":"chain","replicas":%s,"members":1,"seed":7,"inputs":{"mc":"%s","data":"%s"},"chain":{"iterations":2,"config":%s},"resources":{%s}}\n' \
      "$k" "$n" "$c/mc.h5" "$c/data.h5" "$cfg" "$resources" >"$spec"
    t "$ff" --log-level warn campaign init "$spec" --dir "$dir" || { rc=1; entries+="${entries:+,}\"$k\":null"; continue; }
    say "campaign: K=$k tasks per GPU, $n chains"
    local smp=$c/gpu_apps_k$k.txt sampler="" entry
    : >"$smp"
    if command -v nvidia-smi >/dev/null; then sample_gpu_apps "$smp" & sampler=$!; fi
    t1=$(now_ms)
    t "$ff" --log-level warn campaign run "$dir"
    local r=$?
    secs=$(awk -v a="$t1" -v b="$(now_ms)" 'BEGIN{printf "%.2f", (b-a)/1000}')
    if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null; fi
    [ $r -ne 0 ] && rc=$r
    say "campaign: K=$k: rc $r, ${secs}s"
    entry=$("$py" - "$dir" "$n" "$secs" "$r" "$smp" <<'EOF'
import json, sys, os
d, n, secs, rc, smp = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rows = []  # (started_at, finished_at, slot) of the done tasks, from the campaign's journal
try:
    import sqlite3
    db = sqlite3.connect("file:" + os.path.join(d, "journal.sqlite") + "?mode=ro", uri=True)
    rows = [r for r in db.execute("SELECT started_at, finished_at, slot FROM tasks WHERE state = 'done'")
            if r[1] > r[0] > 0]
except Exception as e:
    print("journal:", e, file=sys.stderr)
rows.sort()
tasks = [f - s for s, f, _ in rows]
first_idx = {}  # each slot's first task pays its worker's start-up (CUDA context, inputs)
for i, (_, _, slot) in enumerate(rows):
    first_idx.setdefault(slot, i)
first = {slot: rows[i][1] - rows[i][0] for slot, i in first_idx.items()}
warm = [f - s for i, (s, f, _) in enumerate(rows) if i not in set(first_idx.values())]
pids, most = set(), 0
lines = open(smp).read().splitlines() if os.path.exists(smp) else []
for line in lines:
    apps = [a for a in line.split(" ", 1)[-1].split(";") if a.strip() and "," in a]
    most = max(most, len(apps))
    pids.update(a.split(",")[0].strip() for a in apps)
# nvidia-smi lists no process in a container without the host's process ids: unknown, not 0.
if not pids:
    most = None
# What the tasks say themselves (result.json: the process that trained each, its GPU peak).
task_pids, task_peak = set(), None
import glob
for p in glob.glob(os.path.join(d, "tasks", "*", "result.json")):
    try:
        proc = json.load(open(p))["device"].get("process") or {}
    except Exception:
        continue
    if "pid" in proc: task_pids.add(proc["pid"])
    if proc.get("peak_allocated_mb") is not None:
        task_peak = max(task_peak or 0, proc["peak_allocated_mb"])
print(json.dumps({"chains": n, "done": len(tasks), "rc": rc, "makespan_s": secs,
                  "chains_per_hour": round(3600 * len(tasks) / secs, 1) if secs > 0 else None,
                  "mean_task_s": round(sum(tasks) / len(tasks), 2) if tasks else None,
                  "mean_first_task_per_slot_s": round(sum(first.values()) / len(first), 2) if first else None,
                  "mean_later_task_s": round(sum(warm) / len(warm), 2) if warm else None,
                  "task_s": [round(x, 2) for x in tasks],
                  "gpu_processes_max": most, "gpu_pids": sorted(pids),
                  "task_processes": len(task_pids), "task_peak_allocated_mb": task_peak,
                  "gpu_apps_samples": lines[:90]}))
EOF
)
    entries+="${entries:+,}\"$k\":${entry:-null}"
    say "campaign: K=$k: ${entry:0:300}"
  done
  "$py" - "$out/campaign.json" "$fresh_s" "$cfg" "$chain_events" "{$entries}" <<'EOF'
import json, sys
dst, fresh, cfg, events, ks = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
k1 = ks.get("1") or {}
later = k1.get("mean_later_task_s")
res = {"chain_config": cfg, "iterations": 2, "events": events,
       "fresh_process_chain_s": fresh, "k1_mean_task_s": k1.get("mean_task_s"),
       "k1_first_task_s": k1.get("mean_first_task_per_slot_s"), "k1_mean_later_task_s": later,
       "fresh_minus_persistent_s": round(fresh - later, 2) if later and fresh else None,
       "tasks_per_gpu": ks,
       "gpu_sharing": "time-sliced: no CUDA MPS daemon started (the rendered Slurm scripts start one where the node allows)"}
json.dump(res, open(dst, "w"), indent=1)
print(json.dumps({"fresh_process_chain_s": fresh, "k1_mean_task_s": res["k1_mean_task_s"],
                  "k1_mean_later_task_s": later,
                  "chains_per_hour": {k: (v or {}).get("chains_per_hour") for k, v in ks.items()},
                  "gpu_processes_max": {k: (v or {}).get("gpu_processes_max") for k, v in ks.items()}}))
EOF
  add_result campaign "$("$py" -c 'import json,sys; j=json.load(open(sys.argv[1])); print(json.dumps({"fresh_process_chain_s": j["fresh_process_chain_s"], "k1_mean_task_s": j["k1_mean_task_s"], "k1_mean_later_task_s": j["k1_mean_later_task_s"], "chains_per_hour": {k: (v or {}).get("chains_per_hour") for k, v in j["tasks_per_gpu"].items()}}))' "$out/campaign.json" 2>/dev/null || echo null)"
  return $rc
}

# ---------------------------------------------------------------- run
say "scripts/gpu-check.sh -> $out (budget ${budget}s, $jobs jobs$([ "$dry" = 1 ] && echo ', dry run'))"
plan() {  # plan NAME CAP_S FUNCTION: step, unless a dry run or FF_STEPS leave it out
  if [ -n "$only_steps" ] && [[ ",$only_steps," != *",$1,"* ]]; then
    skip_step "FF_STEPS" "$1"
    # A later call on the same machine: the environment of the deps step that ran before.
    if [ "$1" = deps ] && [ -s "$prefix/env.sh" ]; then
      # shellcheck disable=SC1091
      . "$prefix/env.sh" && say "deps: environment of an earlier run ($prefix/env.sh)"
    fi
  elif [ "$dry" = 1 ] && [[ " facts deps configure " != *" $1 "* ]]; then skip_step "dry run" "$1"
  else step "$@"; fi
}
plan facts 60 do_facts
plan deps 90 do_deps
plan configure 150 do_configure
plan build 330 do_build
plan gate 45 do_gate
plan bench 150 do_bench
plan campaign 150 do_campaign
plan ctest 400 do_ctest
plan build_all 600 do_build_all
write_summary

say "summary ($(($(date +%s) - t_start))s):"
"$py" - "$out/summary.json" <<'EOF' || cat "$out/summary.json"
import json, sys
s = json.load(open(sys.argv[1]))
for st in s["steps"]:
    print(f'  {st["name"]:10s} {st["status"]:8s} {st["seconds"]:7.1f}s  {st["note"]}')
f = s["facts"]
print(f'  gpu: {f.get("gpu")}; torch: {f.get("torch")}; nvcc {f.get("nvcc")}')
b = s["results"].get("bench") or {}
for k, v in b.items():
    if v and v.get("jets_per_s"):
        extra = f', baseline {v["baseline_jets_per_s"]:.0f} jets/s, x{v["speedup"]:.2f}' if v.get("speedup") else ""
        if v.get("members_speedup"): extra += f', x{v["members_speedup"]:.2f} over one member'
        print(f'  bench {k:>12s}: {v["jets_per_s"]:.0f} jets/s, {v["step_ms"]:.1f} ms/step{extra}')
    elif v and v.get("epoch_s") is not None:
        cpu = f', CPU {v["cpu_epoch_s"]:.3f} s, x{v["speedup_vs_cpu"]:.2f}' if v.get("speedup_vs_cpu") else ""
        print(f'  bench {k:>12s}: {v["epoch_s"]:.3f} s per epoch, {v["step_ms"]:.2f} ms/step{cpu}')
c = s["results"].get("campaign") or {}
if c:
    sec = lambda v: "n/a" if v is None else f"{v}s"
    print(f'  campaign: chains/hour by tasks per GPU {c.get("chains_per_hour")}; one chain: fresh process '
          f'{sec(c.get("fresh_process_chain_s"))}, persistent worker (K=1) {sec(c.get("k1_mean_task_s"))} mean, '
          f'{sec(c.get("k1_mean_later_task_s"))} after its first')
EOF
say "files: $(cd "$out" && ls | tr '\n' ' ')"
exec >&- 2>&-
wait "$tee_pid" 2>/dev/null
exit 0
