#!/usr/bin/env bash
# Sets up (packages + build), then runs the whole test suite through CTest.
#   scripts/test.sh [-L label] [extra ctest args]
# CTest counts a test binary that passes as passed even when some of its cases skipped (a
# LibTorch-version gate, a missing tool): those cases are listed after the run, with their
# reasons, so that what did not run is seen.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cd build
rc=0
ctest --output-on-failure -j "${FOLDFARM_TEST_JOBS:-2}" "$@" || rc=$?
../scripts/skipped-cases.sh Testing/Temporary/LastTest.log || true
exit "$rc"
