#!/usr/bin/env bash
# #26's background trainings, resumable across fresh checkouts.
#   bash results/runs_in_progress/run.sh base32      # or: sr_noaug
#   bash results/runs_in_progress/run.sh base32 save # copy the newest checkpoint here (to commit)
# The run writes to runs/<name>/ (ignored). `save` copies its checkpoint,
# log and run record to results/runs_in_progress/<name>/ (tracked), from
# where a fresh checkout restores them before resuming, so the run goes on
# exactly from its last saved step (the recipe's --resume).
set -euo pipefail
cd "$(dirname "$0")/../.."
which="${1:?base32 or sr_noaug}"
case "$which" in
  base32)
    name=cifar_base32
    cmd=(recipes/train_base32.py --preset small --network '{"base_channels":24,"channel_mult":[1,2,2,2]}'
         --dataset ../shared/data/cifar10/train --batch_size 64 --train_steps "${STEPS:-1825}"
         --learning_rate 6e-4 --ema_decay 0.999 --label_dropout 0.1 --checkpoint_every 100) ;;
  sr_noaug)
    name=cifar_sr16to32_noaug
    cmd=(recipes/train_sr16to32.py --preset small --network '{"base_channels":16,"num_res_blocks":1}'
         --dataset ../shared/data/cifar10/train --batch_size 64 --train_steps 3000
         --learning_rate 1e-3 --ema_decay 0.999 --augmentation none --checkpoint_every 100) ;;
  *) echo "unknown run $which (base32 or sr_noaug)" >&2; exit 2 ;;
esac
run=runs/$name
kept=results/runs_in_progress/$name
if [ "${2:-}" = save ]; then
  mkdir -p "$kept"
  cp "$run/checkpoint.keras" "$kept/checkpoint.keras.tmp" && mv "$kept/checkpoint.keras.tmp" "$kept/checkpoint.keras"
  cp "$run/log.csv" "$run/run.json" "$kept/"
  echo "saved $(tail -1 "$kept/log.csv" | cut -d, -f1) to $kept"; exit 0
fi
if [ ! -f "$run/checkpoint.keras" ] && [ -f "$kept/checkpoint.keras" ]; then
  mkdir -p "$run" && cp "$kept/checkpoint.keras" "$kept/log.csv" "$kept/run.json" "$run/"
  echo "restored $run from $kept"
fi
resume=()
[ -f "$run/checkpoint.keras" ] && resume=(--resume)
KERAS_BACKEND=jax exec nice -n 19 python "${cmd[@]}" --output_dir "$run" "${resume[@]}"
