#!/bin/bash
# Four U-Nets on a GPU host with 16 cores, in one command of under 10 minutes: 14 shards of fresh
# frames rendered in parallel (10 default, 4 hardest preset, seeds 41001-41014; lid skin on half the
# animals, `synth --lid-skin`, models/TRAINING.md "Fifteenth step"), then, side by side,
# each with its own augmenting workers: the fine and the coarse U-Net from random weights, and both
# warm-started from the shipped weights (models/seg_*.pt) at a gentle learning rate. Every run stops
# at the deadline; an unfinished one leaves its per-epoch checkpoint. Run from the repository root
# (models/TRAINING.md, "Tenth step" and "Twelfth step"):
#   OUT=folder [FRAMES=450 SHARDS=14 CROPS=3 FINE_EPOCHS=14 COARSE_EPOCHS=24 FINE_WARM_EPOCHS=8
#               COARSE_WARM_EPOCHS=14 DEADLINE_S=500 LID_SKIN=0.5] bash models/gpu_seg.sh
# FRAMES=9 SHARDS=7 FINE_EPOCHS=2 COARSE_EPOCHS=2 FINE_WARM_EPOCHS=1 COARSE_WARM_EPOCHS=1 CROPS=1 DEV=cpu
# PY=.venv/bin/python tries it on a CPU.
set -u
export PYTHONPATH=$PWD
T0=$(date +%s)
FRAMES=${FRAMES:-450}; FINE_EPOCHS=${FINE_EPOCHS:-14}; COARSE_EPOCHS=${COARSE_EPOCHS:-24}
FINE_WARM_EPOCHS=${FINE_WARM_EPOCHS:-8}; COARSE_WARM_EPOCHS=${COARSE_WARM_EPOCHS:-14}
DEADLINE=$((T0 + ${DEADLINE_S:-500})); CROPS=${CROPS:-3}; DEV=${DEV:-cuda}; SHARDS=${SHARDS:-14}
LID_SKIN=${LID_SKIN:-0.5}
D=/tmp/gpu10/data; W=/tmp/gpu10/w; LOG=$OUT/log.txt
rm -rf /tmp/gpu10 && mkdir -p $D $W "$OUT"
E="${PY:-python3} -m export.cli"
say() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$LOG"; }
say "start $(nproc) cores; $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null)"
for k in $(seq 1 "$SHARDS"); do
  r=default; [ "$k" -gt $((SHARDS - SHARDS * 2 / 7)) ] && r=hardest
  $E synth --frames "$FRAMES" --seed $((41000 + k)) --randomise $r --lid-skin "$LID_SKIN" --out $D/s$k --quiet >> $W/synth.log 2>&1 &
done
$E synth --frames $((FRAMES * 4 / 9)) --seed 5000 --out $D/val --quiet >> $W/synth.log 2>&1 &
wait
say "synth done: $(grep -c wrote $W/synth.log) sets"; tail -3 $W/synth.log >> "$LOG"
[ "$(grep -c wrote $W/synth.log)" -eq $((SHARDS + 1)) ] || { cat $W/synth.log >> "$LOG"; say "synth failed"; exit 1; }
S=$(ls -d $D/s*)
left() { local s=$((DEADLINE - $(date +%s))); echo $((s > 1 ? s : 1)); }  # timeout 0 would mean none
seg() {  # name, workers, options
  timeout "$(left)" $E train-seg --data $S --val $D/val --schedule cosine --workers "$2" --threads 2 \
    --device "$DEV" --seed 21 --quiet --out $W/$1.pt "${@:3}" > $W/$1.log 2>&1
}
seg seg_fine_scratch 4 --model fine --base 16 --crops-per-box "$CROPS" --batch 64 --lr 0.004 --epochs "$FINE_EPOCHS" &
seg seg_fine_warm 3 --model fine --init models/seg_fine.pt --crops-per-box "$CROPS" --batch 64 --lr 0.0005 \
  --epochs "$FINE_WARM_EPOCHS" &
seg seg_coarse_scratch 3 --model coarse --base 16 --batch 32 --lr 0.002 --epochs "$COARSE_EPOCHS" &
seg seg_coarse_warm 2 --model coarse --init models/seg_coarse.pt --batch 32 --lr 0.0005 \
  --epochs "$COARSE_WARM_EPOCHS" &
wait
for m in seg_fine_scratch seg_fine_warm seg_coarse_scratch seg_coarse_warm; do
  say "== $m"; cat $W/$m.log >> "$LOG"
  if [ -f $W/$m.pt ]; then cp $W/$m.pt "$OUT/"; else cp $W/$m.pt.ckpt "$OUT/" 2>/dev/null; fi
done
say "end"
