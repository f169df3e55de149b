#!/usr/bin/env bash
# Regenerates the example batch scripts in this folder with `foldfarm slurm render`.
#   docs/examples/render.sh [path/to/foldfarm]
# Target: 64 nodes x 4 GPUs, 4 tasks per GPU, a 10,000-task campaign (2,500 replicas x 4
# members); pretraining on 16 nodes x 4 GPUs. The campaign directory is created under a
# temporary folder (a campaign spec with sleep tasks: the scripts do not depend on the kind).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ff=${1:-foldfarm}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/spec.json" <<'SPEC'
{"name": "zjets-bootstrap", "task": "sleep", "replicas": 2500, "members": 4, "seed": 2024,
 "params": {"seconds": 1}, "resources": {"gpus": 4, "tasks_per_gpu": 4, "threads_per_task": 4},
 "executor": "slurm"}
SPEC
camp="$tmp/zjets-bootstrap"
"$ff" campaign init "$tmp/spec.json" --dir "$camp" >/dev/null
common=(--partition gpu --account phy123 --qos normal --constraint a100
        --setup 'module load cuda/12.4 openmpi/4.1'
        --foldfarm /opt/foldfarm/bin/foldfarm)
"$ff" slurm render pretrain "${common[@]}" --job-name pet-pretrain --time 24:00:00 \
  --nodes 16 --gpus-per-node 4 --cpus-per-task 8 --signal-grace 300 --requeue \
  --output 'logs/%x-%j.out' -- --preset omnilearn --data /scratch/jetclass/train.h5 \
  --out /scratch/pet/omnilearn >"$here/pretrain-16x4.sbatch"
"$ff" slurm render pilot "${common[@]}" --job-name zjets-pilot --time 12:00:00 \
  --nodes 64 --gpus-per-node 4 --tasks-per-gpu 4 --cpus-per-task 4 --signal-grace 600 \
  --output 'logs/%x-%j.out' "$camp" >"$here/pilot-64x4.sbatch"
"$ff" slurm render array "${common[@]}" --job-name zjets-array --time 04:00:00 \
  --gpus-per-node 4 --tasks-per-gpu 4 --cpus-per-task 4 --signal-grace 600 --throttle 256 \
  --output 'logs/%x-%A_%a.out' "$camp" >"$here/array-10000.sbatch"
# The temporary campaign path in the scripts reads as /scratch/zjets-bootstrap.
sed -i "s|$camp|/scratch/zjets-bootstrap|g" "$here"/*.sbatch
echo "rendered into $here" >&2
