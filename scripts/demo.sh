#!/usr/bin/env bash
# The main job on the embedded default, from a fresh machine: set up (packages + build),
# generate synthetic pretraining and unfolding data, pretrain the `tiny` PET foundation
# data-parallel (mpirun -np 2), run a bootstrap campaign warm-started from it on the local
# executor (or through a local one-node Slurm cluster with --slurm), run the same campaign
# with the observable-level MultiFold baseline (an MLP on the six observables), aggregate
# both into bands, run the warm-start study, and write the HTML report with the baseline's
# Δ and recovered shifts beside the PET chains'.
#
#   scripts/demo.sh [--slurm] [--out DIR] [--build-dir DIR] [--no-build]
#
# --build-dir DIR  build into (and run foldfarm from) DIR instead of build/
# --no-build       only check the packages; use the foldfarm already built in the build dir
#
# Sizes (environment): FF_DEMO_PRETRAIN_JETS (8000), FF_DEMO_EVENTS (3000),
# FF_DEMO_REPLICAS (16), FF_DEMO_MEMBERS (2), FF_DEMO_ITERATIONS (2), FF_DEMO_EPOCHS (2),
# FF_DEMO_PARTICLES (128), FF_DEMO_WARMSTART_EPOCHS (6: epochs of each warm-start curve).
set -euo pipefail
cd "$(dirname "$0")/.."

use_slurm=0
out="${FOLDFARM_DEMO_DIR:-out/demo}"
build_dir=build
build_flag=()
while [ $# -gt 0 ]; do
  case "$1" in
    --slurm) use_slurm=1; shift ;;
    --out) [ $# -ge 2 ] || { echo "demo.sh: --out needs a directory" >&2; exit 2; }; out="$2"; shift 2 ;;
    --build-dir) [ $# -ge 2 ] || { echo "demo.sh: --build-dir needs a directory" >&2; exit 2; }
      build_dir="$2"; shift 2 ;;
    --no-build) build_flag=(--no-build); shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

scripts/setup.sh --build-dir "$build_dir" "${build_flag[@]}"
ff="$(cd "$build_dir" && pwd)/apps/foldfarm/foldfarm"
[ -x "$ff" ] || { echo "demo.sh: $ff is not built (run without --no-build)" >&2; exit 1; }
jets="${FF_DEMO_PRETRAIN_JETS:-8000}"
events="${FF_DEMO_EVENTS:-3000}"
replicas="${FF_DEMO_REPLICAS:-16}"
members="${FF_DEMO_MEMBERS:-2}"
iterations="${FF_DEMO_ITERATIONS:-2}"
epochs="${FF_DEMO_EPOCHS:-2}"
particles="${FF_DEMO_PARTICLES:-128}"
ws_epochs="${FF_DEMO_WARMSTART_EPOCHS:-6}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
start=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - start ))s] $*" >&2; }

step "1/8 synthetic data: $jets pretraining jets (six classes), $events unfolding events per tune"
"$ff" data synth --kind pretrain --jets "$jets" --seed 1 --particles "$particles" --out "$out/pretrain.h5"
"$ff" data synth --kind unfold --tune sim --events "$events" --seed 2 --particles "$particles" --out "$out/mc.h5"
"$ff" data synth --kind unfold --tune data --events "$events" --seed 3 --particles "$particles" --out "$out/data.h5"
"$ff" data inspect "$out/pretrain.h5"

step "2/8 pretraining the tiny PET foundation on 2 MPI ranks"
mpirun --allow-run-as-root --oversubscribe -np 2 \
  -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1 \
  "$ff" pretrain --data "$out/pretrain.h5" --out "$out/foundation" --preset tiny \
  --epochs "$epochs" --batch 128 --lr 1e-3 --threads 1

step "3/8 campaign: $replicas replicas x $members members, $iterations OmniFold iterations"
cat > "$out/campaign.json" <<JSON
{
  "name": "demo-bootstrap",
  "task": "chain",
  "replicas": $replicas,
  "members": $members,
  "seed": 2026,
  "inputs": {"mc": "$out/mc.h5", "data": "$out/data.h5", "truth": "$out/data.h5",
             "foundation": "$out/foundation"},
  "chain": {"iterations": $iterations,
            "config": {"classifier": "pet+mlp", "preset": "tiny", "epochs": $epochs,
                       "patience": 2, "batch_size": 256, "lr": 1e-3}},
  "resources": {"cpu_slots": 2, "threads_per_task": 1},
  "retry": {"max_attempts": 3}
}
JSON
rm -rf "$out/campaign"
"$ff" campaign init "$out/campaign.json" --dir "$out/campaign"

if [ "$use_slurm" -eq 1 ]; then
  step "4/8 running the campaign through the local Slurm cluster"
  scripts/slurm-local.sh start
  "$ff" slurm submit "$out/campaign"
else
  step "4/8 running the campaign on the local executor (2 slots)"
  "$ff" campaign run "$out/campaign"
fi
"$ff" campaign status "$out/campaign"

step "5/8 baseline: the same campaign with the observable-level MultiFold (MLP on the six observables)"
cat > "$out/baseline.json" <<JSON
{
  "name": "demo-baseline-mlp",
  "task": "chain",
  "replicas": $replicas,
  "members": $members,
  "seed": 2026,
  "inputs": {"mc": "$out/mc.h5", "data": "$out/data.h5", "truth": "$out/data.h5"},
  "chain": {"iterations": $iterations, "config": {"classifier": "mlp"}},
  "resources": {"cpu_slots": 2, "threads_per_task": 1},
  "retry": {"max_attempts": 3}
}
JSON
rm -rf "$out/baseline"
"$ff" campaign init "$out/baseline.json" --dir "$out/baseline"
"$ff" campaign run "$out/baseline"

step "6/8 aggregating both into bands"
"$ff" campaign aggregate "$out/campaign"
"$ff" campaign aggregate "$out/baseline"

step "7/8 warm-start study (iteration 0, step 1: foundation vs scratch, $ws_epochs epochs each)"
# The campaign chains' settings, with enough epochs for a validation-loss curve (the study
# turns early stopping off).
cat > "$out/warmstart-config.json" <<JSON
{"preset": "tiny", "epochs": $ws_epochs, "batch_size": 256, "lr": 1e-3}
JSON
"$ff" study warmstart --mc "$out/mc.h5" --data "$out/data.h5" --init "$out/foundation" \
  --config "$out/warmstart-config.json" --out "$out/campaign/warmstart" --threads 2

step "8/8 report"
"$ff" report "$out/campaign" --baseline "$out/baseline"
echo >&2
echo "demo: done in $(( $(date +%s) - start ))s; open $out/campaign/report.html" >&2
cat "$out/campaign/aggregate/summary.json"
# Side by side, per observable: Δ x10^3 of the prior, the floor, the PET chains, the baseline.
echo >&2
"$ff" study compare "$out/campaign" "$out/baseline" --names PET,MLP
