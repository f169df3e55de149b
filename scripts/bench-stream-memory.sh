#!/usr/bin/env bash
# Peak resident memory of `foldfarm pretrain` per rank against the size of the data: the
# stream (--stream) at 1x, 4x and 16x, the in-memory path at 1x and 4x for contrast.
#
#   scripts/bench-stream-memory.sh OUTDIR [BASE_JETS] [SECONDS]
#
# Writes OUTDIR/jets_*.h5 (synthetic, 128 particle slots, deflate 1; 16 files of BASE_JETS
# jets, default 25000: 1x = 1 file, 4x = 4, 16x = 16) and OUTDIR/stream-memory.json. Each
# run trains (tiny preset, batch 128) until SECONDS (default 45) have passed and is then
# stopped by SIGUSR1, as a time limit would: the stream's memory (buffer, read-ahead, held-out
# sets, model) is all taken by then, and a CPU trains too slowly to finish epochs of 16x.
# The in-memory runs read everything first. Peak RSS is the process's VmHWM (GNU time).
set -euo pipefail
out=${1:?usage: bench-stream-memory.sh OUTDIR [BASE_JETS] [SECONDS]}
base=${2:-25000}
secs=${3:-45}
here=$(cd "$(dirname "$0")/.." && pwd)
ff=${FOLDFARM:-$here/build/apps/foldfarm/foldfarm}
[[ -x $ff ]] || { echo "bench-stream-memory: build foldfarm first ($ff)" >&2; exit 2; }
command -v /usr/bin/time >/dev/null || { echo "bench-stream-memory: needs GNU time" >&2; exit 2; }
mkdir -p "$out"
for k in $(seq 0 15); do
  f=$out/jets_$(printf %02d "$k").h5
  [[ -s $f ]] || "$ff" data synth --kind pretrain --jets "$base" --seed "$k" --out "$f" >/dev/null
done

run() {  # label files mode
  local label=$1 files=$2 mode=$3 dir=$out/run_$1
  rm -rf "$dir"
  local flags=()
  [[ $mode == stream ]] && flags=(--stream)
  /usr/bin/time -f "%M" -o "$out/$label.rss" timeout -s USR1 "$secs" \
    "$ff" pretrain --data "$files" --out "$dir" "${flags[@]}" --preset tiny --epochs 1 \
    --batch 128 --threads 2 >/dev/null 2>"$out/$label.log" || true
  local kb
  kb=$(tail -1 "$out/$label.rss")
  echo "{\"run\": \"$label\", \"mode\": \"$mode\", \"files\": \"$files\", \"peak_rss_MB\": $((kb / 1024))}"
}

{
  echo "["
  run stream_1x "$out/jets_00.h5" stream; echo ","
  run stream_4x "$out/jets_0[0-3].h5" stream; echo ","
  run stream_16x "$out/jets_*.h5" stream; echo ","
  run memory_1x "$out/jets_00.h5" memory; echo ","
  run memory_4x "$out/jets_0[0-3].h5" memory
  echo "]"
} | tee "$out/stream-memory.json"
