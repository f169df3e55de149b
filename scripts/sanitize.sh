#!/usr/bin/env bash
# Builds the parts of foldfarm that do not need LibTorch (base, data, jobs, report, slurm, the
# aggregation of ensembles/, and the foldfarm front end) with a sanitizer and runs their tests,
# failing on any sanitizer report:
#   scripts/sanitize.sh [address|thread] [BUILD_DIR]
# address (default): AddressSanitizer + UndefinedBehaviorSanitizer, LeakSanitizer on.
# thread: ThreadSanitizer (the campaign executors' threads, the journal, the leases).
# BUILD_DIR defaults to build-<sanitizer>. Needs what scripts/setup.sh installs; takes about
# 10 minutes on 2 cores the first time (ccache after). The MPI tests are left out: Open MPI's
# own code is not instrumented and reports there are not foldfarm's.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-address}
case "$kind" in
  address) flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined" ;;
  thread) flags="-fsanitize=thread" ;;
  -h | --help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
  *) echo "sanitize.sh: unknown sanitizer '$kind' (address or thread)" >&2; exit 2 ;;
esac
build=${2:-build-$kind}
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFOLDFARM_WITH_TORCH=OFF \
  -DFOLDFARM_WITH_CUDA=OFF -DFOLDFARM_TEST_TIMEOUT_SCALE=3 "${launcher[@]}" \
  -DCMAKE_CXX_FLAGS="$flags -fno-omit-frame-pointer" -DCMAKE_C_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="$flags" >"$build.configure.log"
tests=(test_base test_data test_jobs test_report slurm_render_test slurm_client_test
  test_ensembles_stats test_e2e_front_end)
cmake --build "$build" -j "${FOLDFARM_BUILD_JOBS:-$(nproc)}" --target "${tests[@]}" ff_jobs_tool \
  ff_jobs_test_kinds ff_report_fixture ff_report_tool foldfarm
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
regex=$(IFS='|'; echo "^(${tests[*]})\$")
cd "$build"
ctest --output-on-failure -j "${FOLDFARM_TEST_JOBS:-2}" -R "$regex"
