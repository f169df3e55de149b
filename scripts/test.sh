#!/usr/bin/env bash
# Sets up (packages + build), then runs the whole test suite through CTest.
#   scripts/test.sh [-L label] [extra ctest args]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cd build
ctest --output-on-failure -j "${FOLDFARM_TEST_JOBS:-2}" "$@"
