#!/bin/bash
# Renders again the frame sets that models/TRAINING.md trains, chooses and reports on, with the exact
# commands recorded there (every renderer is deterministic: the same seed gives the same frames), so a
# development machine that lost its data folder is back in one command. Run from the repository root:
#   DATA=folder [JOBS=2] bash models/render_sets.sh GROUP...
# Groups (each a set of folders under DATA; a folder already holding all its frames is kept, a
# half-written one is reported and left for you to delete):
#   val         val (choices, per-epoch monitoring, INT8 calibration)
#   shards      shard-1 ... shard-14 (seg_fine's 6,300 frames, "Eighteenth step")
#   shards2     shard2-1 ... shard2-14 ("Nineteenth step")
#   shards3     shard3-1 ... shard3-14 (half the animals with dim eyes, "Twenty-third step")
#   shards4     shard4-1 ... shard4-6 (half the animals with dark lids, "Twenty-ninth step")
#   shards5     shard5-1 ... shard5-10 (every animal with dark lids, "Thirtieth step")
#   shards6     shard6-1 ... shard6-6 (fine U-Net fine-tune with unseen eyes left out, "Thirty-sixth step")
#   shards7     shard7-1 ... shard7-6 (the fine U-Nets' second round on their own false eyes, "Thirty-eighth step")
#   shards8     shard8-1 ... shard8-6, dark lids (the eye model's longer round with dark lids, "Fortieth step")
#   shards9     shard9-1 ... shard9-6 (the eye model's second longer round e55, "Forty-first step")
#   eye         train-c, train-c-margin (the eye model's other lid-skin frames)
#   acceptance  heldout-hardest, first-99999, indep-616161, style-test, style-train (reported, never chosen on)
#   judge=H:C   hardest-preset judging sets val-hardest-H, H+500, ... (six) and choice sets choice-C, ...
#               e.g. judge=66000:969696,979797
set -u
[ $# -gt 0 ] || { awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 2; }  # the comment above
DATA=${DATA:?set DATA to the folder for the data sets}
JOBS=${JOBS:-2}
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
E="${PY:-.venv/bin/python} -m export.cli"
mkdir -p "$DATA"
FAILED=0
running_below() {  # N: wait until fewer than N renders run
  while [ "$(jobs -rp | wc -l)" -ge "$1" ]; do wait -n || FAILED=1; done
}
render() {  # folder, frames, command, options
  local out=$DATA/$1
  if [ -e "$out" ]; then
    if [ "$(wc -l < "$out/labels.jsonl" 2>/dev/null || echo 0)" -eq "$2" ]; then echo "kept $out"
    else echo "$out is incomplete (a render was stopped); delete it and run again" >&2; FAILED=1; fi
    return
  fi
  running_below "$JOBS"
  $E "$3" --frames "$2" "${@:4}" --quiet --out "$out" &
}
shards() {  # prefix, seed base, number of shards, first hardest shard, more synth options
  for k in $(seq 1 "$3"); do r=default; [ "$k" -ge "$4" ] && r=hardest
    render "$1-$k" 450 synth --seed $(($2 + k)) --randomise $r --lid-skin 0.5 "${@:5}"
  done
}
for group in "$@"; do
  case $group in
    val) render val 200 synth --seed 5000 ;;
    shards) shards shard 41000 14 11 ;;
    shards2) shards shard2 62000 14 11 ;;
    shards3) shards shard3 91000 14 11 --dim-eyes 0.5 ;;
    shards4) shards shard4 120000 6 4 --dark-lids 0.5 ;;
    shards5) shards shard5 130000 10 6 --dark-lids 1.0 ;;
    shards6) shards shard6 140000 6 4 ;;
    shards7) shards shard7 160000 6 4 ;;
    shards8) shards shard8 170000 6 4 --dark-lids 0.5 ;;
    shards9) shards shard9 180000 6 4 ;;
    eye)
      render train-c 3500 synth --seed 43001
      render train-c-margin 3500 synth --seed 43001 --lid-skin 0.5 ;;
    acceptance)
      render heldout-hardest 200 synth --seed 77001 --randomise hardest
      render first-99999 200 synth --seed 99999 --randomise none
      render indep-616161 200 render-independent --seed 616161
      render style-test 200 synth --seed 88001
      render style-train 1500 synth --seed 1100 --style-holdout train ;;
    judge=*:*)
      spec=${group#judge=}; h=${spec%%:*}
      for s in $(seq "$h" 500 $((h + 2500))); do
        render "val-hardest-$s" 200 synth --randomise hardest --seed "$s"
      done
      for c in $(echo "${spec#*:}" | tr , " "); do render "choice-$c" 600 render-choice --seed "$c" --workers 1; done ;;
    *) echo "unknown group: $group (see the top of $0)" >&2; exit 2 ;;
  esac
done
running_below 1
[ "$FAILED" -eq 0 ] || { echo "some sets failed to render; see the messages above" >&2; exit 1; }
