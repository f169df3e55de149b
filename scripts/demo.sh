#!/usr/bin/env bash
# The main job on the embedded default: set up, then run the pipeline on synthetic data on
# this machine's CPU with the local executor. Outputs go to ${FOLDFARM_DEMO_DIR:-out/demo}.
#   scripts/demo.sh [--slurm]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
ff=build/apps/foldfarm/foldfarm
out="${FOLDFARM_DEMO_DIR:-out/demo}"
mkdir -p "$out"
"$ff" data synth --kind pretrain --jets 20000 --seed 1 --out "$out/pretrain.h5"
"$ff" data inspect "$out/pretrain.h5"
