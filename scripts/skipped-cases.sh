#!/usr/bin/env bash
# Lists the GoogleTest cases a CTest run skipped, with their reasons, from CTest's log:
#   scripts/skipped-cases.sh [build/Testing/Temporary/LastTest.log]
# A case that skips (GTEST_SKIP: a LibTorch-version gate, no GPU, a missing tool) leaves its
# binary passed in CTest's summary; this says what did not run. Prints nothing when none did.
set -euo pipefail
log=${1:-build/Testing/Temporary/LastTest.log}
[[ -r $log ]] || { echo "skipped-cases: no CTest log at $log" >&2; exit 1; }
awk '
  / Skipped$/ { reason = ""; getline reason; next }
  /^\[  SKIPPED \] [^ ]+ \([0-9]+ ms\)$/ {
    name = $4
    if (!(name in seen)) { seen[name] = 1; order[++n] = name; why[name] = reason }
    reason = ""
  }
  END {
    if (n == 0) exit 0
    printf "%d test case(s) skipped, not run (CTest shows their binaries by the cases that ran):\n", n
    for (i = 1; i <= n; ++i) printf "  %s: %s\n", order[i], why[order[i]] == "" ? "(no reason given)" : why[order[i]]
  }
' "$log"
