#!/usr/bin/env bash
# The main job on the embedded default, from a fresh machine: set up (packages + build),
# generate synthetic pretraining and unfolding data, pretrain the `tiny` PET foundation
# data-parallel (mpirun -np 2), run a bootstrap campaign warm-started from it on the local
# executor (or through a local one-node Slurm cluster with --slurm), run the same campaign
# with the observable-level MultiFold baseline (an MLP on the six observables), aggregate
# both into bands, run the warm-start study, and write the HTML report with the baseline's
# Δ and recovered shifts beside the PET chains'.
#
#   scripts/demo.sh [--slurm] [--systematics] [--out DIR] [--build-dir DIR] [--no-build]
#
# --systematics    run the systematics campaign instead: the nominal bootstrap chains plus a
#                  detector up/down pair (reco energy scale +-3%), a modelling variation
#                  (another generator's simulation as the prior), MC-statistics replicas and
#                  a non-closure test, on a task graph (each varied chain warm-starts from the
#                  nominal chain of its replica and member); aggregated into statistical and
#                  total bands, the uncertainty breakdown and aggregate/event_weights.h5
#
# --build-dir DIR  build into (and run foldfarm from) DIR instead of build/
# --no-build       only check the packages; use the foldfarm already built in the build dir
# --out DIR        where everything goes (default out/demo, or FOLDFARM_DEMO_DIR); a second run
#                  into it starts over (a directory the demo did not make is refused)
#
# Sizes (environment): FF_DEMO_PRETRAIN_JETS (8000), FF_DEMO_EVENTS (3000),
# FF_DEMO_REPLICAS (16), FF_DEMO_MEMBERS (2), FF_DEMO_ITERATIONS (2), FF_DEMO_EPOCHS (2),
# FF_DEMO_PARTICLES (128), FF_DEMO_WARMSTART_EPOCHS (6: epochs of each warm-start curve),
# FF_DEMO_MC_STAT_REPLICAS (8: MC-statistics replicas of --systematics).
set -euo pipefail
cd "$(dirname "$0")/.."

use_slurm=0
systematics=0
out="${FOLDFARM_DEMO_DIR:-out/demo}"
build_dir=build
build_flag=()
while [ $# -gt 0 ]; do
  case "$1" in
    --slurm) use_slurm=1; shift ;;
    --systematics) systematics=1; shift ;;
    --out) [ $# -ge 2 ] || { echo "demo.sh: --out needs a directory" >&2; exit 2; }; out="$2"; shift 2 ;;
    --build-dir) [ $# -ge 2 ] || { echo "demo.sh: --build-dir needs a directory" >&2; exit 2; }
      build_dir="$2"; shift 2 ;;
    --no-build) build_flag=(--no-build); shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

# foldfarm alone (it builds foldfarm-torch, which it runs): the tests are scripts/test.sh's.
scripts/setup.sh --build-dir "$build_dir" --target foldfarm ${build_flag[@]+"${build_flag[@]}"}
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
# A second run (or one after a Ctrl-C) starts over in a directory this demo made, marked by
# .foldfarm-demo; a directory that holds anything else is not the demo's to replace.
if [ -n "$(ls -A "$out")" ] && [ ! -e "$out/.foldfarm-demo" ]; then
  echo "demo.sh: $out holds files this demo did not make; choose a new or empty --out" >&2
  exit 2
fi
touch "$out/.foldfarm-demo"
start=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - start ))s] $*" >&2; }
synth_unfold() {  # NAME TUNE SEED [DETECTOR]: an unfolding sample in $out
  "$ff" data synth --kind unfold --tune "$2" --events "$events" --seed "$3" --particles "$particles" \
    ${4:+--detector "$4"} --out "$out/$1" --overwrite
}
synth_pretrain() {
  "$ff" data synth --kind pretrain --jets "$jets" --seed 1 --particles "$particles" --out "$out/pretrain.h5" \
    --overwrite
}
pretrain_foundation() {  # the tiny PET foundation on 2 MPI ranks, into $out/foundation
  rm -rf "$out/foundation"
  mpirun --allow-run-as-root --oversubscribe -np 2 \
    -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1 \
    "$ff" pretrain --data "$out/pretrain.h5" --out "$out/foundation" --preset tiny \
    --epochs "$epochs" --batch 128 --lr 1e-3 --threads 1
}
run_campaign() {  # NAME STEP: init $out/NAME.json into $out/NAME, run it (local or Slurm), status
  rm -rf "$out/$1"
  "$ff" campaign init "$out/$1.json" --dir "$out/$1"
  if [ "$use_slurm" -eq 1 ]; then
    step "$2 running $1 through the local Slurm cluster"
    scripts/slurm-local.sh start
    "$ff" slurm submit "$out/$1"
  else
    step "$2 running $1 on the local executor (2 slots)"
    "$ff" campaign run "$out/$1"
  fi
  "$ff" campaign status "$out/$1"
}
# The PET chains' settings (PET boosted on the observable MLP, warm-started from the foundation).
pet_chain="\"chain\": {\"iterations\": $iterations,
            \"config\": {\"classifier\": \"pet+mlp\", \"preset\": \"tiny\", \"epochs\": $epochs,
                       \"patience\": 2, \"batch_size\": 256, \"lr\": 1e-3}}"

if [ "$systematics" -eq 1 ]; then
  # The systematics campaign (scripts/demo.sh --systematics): its own short pipeline.
  mc_stat="${FF_DEMO_MC_STAT_REPLICAS:-8}"
  step "1/6 synthetic data: $jets pretraining jets; $events unfolding events per sample: the" \
    "simulation, its detector variations (same generated events), another generator, the data"
  synth_pretrain
  synth_unfold mc.h5 sim 2
  synth_unfold mc_det_up.h5 sim 2 energy_scale=1.03
  synth_unfold mc_det_down.h5 sim 2 energy_scale=0.97
  synth_unfold mc_alt.h5 alt 4
  # The data's detector is not the simulation's: off by 1%, inside the +-3% variation.
  synth_unfold data.h5 data 3 energy_scale=1.01

  step "2/6 pretraining the tiny PET foundation on 2 MPI ranks"
  pretrain_foundation

  step "3/6 systematics campaign: $replicas x $members nominal chains and 5 variations"
  cat > "$out/systematics.json" <<JSON
{
  "name": "demo-systematics",
  "task": "chain",
  "replicas": $replicas,
  "members": $members,
  "seed": 2026,
  "inputs": {"mc": "$out/mc.h5", "data": "$out/data.h5", "truth": "$out/data.h5",
             "foundation": "$out/foundation"},
  $pet_chain,
  "variations": {
    "det_up":   {"type": "detector", "source": "detector", "direction": "up",
                 "inputs": {"mc": "$out/mc_det_up.h5"}},
    "det_down": {"type": "detector", "source": "detector", "direction": "down",
                 "inputs": {"mc": "$out/mc_det_down.h5"}},
    "alt":      {"type": "modelling", "source": "modelling", "inputs": {"mc": "$out/mc_alt.h5"}},
    "mc_stat":  {"type": "mc_bootstrap", "replicas": $mc_stat, "members": 1},
    "closure":  {"type": "non_closure", "inputs": {"data": "$out/mc_alt.h5"}}
  },
  "resources": {"cpu_slots": 2, "threads_per_task": 1},
  "retry": {"max_attempts": 3}
}
JSON
  run_campaign systematics "4/6"

  step "5/6 aggregating: statistical and total bands, the breakdown, the publication weights"
  "$ff" campaign aggregate "$out/systematics"

  step "6/6 report"
  "$ff" report "$out/systematics"
  echo >&2
  echo "demo: done in $(( $(date +%s) - start ))s; open $out/systematics/report.html;" \
    "publication weights: $out/systematics/aggregate/event_weights.h5" >&2
  # Per observable: Δ of the prior and the unfolded, and the 68% coverage of the truth by the
  # statistical and by the total band.
  # (null, not compared: nothing inside the binning, printed as "-")
  jq -r '.observables | to_entries[] | [.key, .value.delta_prior, .value.delta_unfolded,
         .value.coverage_68, .value.coverage_68_total] | map(. // "-") | @tsv' \
    "$out/systematics/aggregate/summary.json" |
    awk 'function f(x, w, p) { return x == "-" ? sprintf("%" w "s", "-") : sprintf("%" w "." p "f", x) }
         BEGIN { printf "%-14s %10s %10s %8s %8s\n", "observable", "prior", "unfolded", "cov68", "cov68_tot" }
         { printf "%-14s %s %s %s %s\n", $1, f($2, 10, 2), f($3, 10, 2), f($4, 8, 2), f($5, 8, 2) }'
  exit 0
fi

step "1/8 synthetic data: $jets pretraining jets (six classes), $events unfolding events per tune"
synth_pretrain
synth_unfold mc.h5 sim 2
synth_unfold data.h5 data 3
"$ff" data inspect "$out/pretrain.h5"

step "2/8 pretraining the tiny PET foundation on 2 MPI ranks"
pretrain_foundation

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
  $pet_chain,
  "resources": {"cpu_slots": 2, "threads_per_task": 1},
  "retry": {"max_attempts": 3}
}
JSON
run_campaign campaign "4/8"

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
