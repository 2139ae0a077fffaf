#!/usr/bin/env bash
# The reproduction behind docs/reproduction.md: five methods trained with the fast CIFAR network and schedule,
# then the evidence protocol for each, then the tables. Every step resumes where it stopped.
#
#   STAGES=train,evidence METHODS="erm mixup" bash examples/reproduce_evidence.sh
#   STAGES=autoattack AA_N=100 bash examples/reproduce_evidence.sh     # AutoAttack-rand on MI-OL, mixup model
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpg.tar.gz}
OUT=${OUT:-results/cifar10-fast}
METHODS=${METHODS:-erm mixup varmixup varmixup-residual vae-recon}
STAGES=${STAGES:-train,evidence}
THREADS=${THREADS:-2}
CLI=${CLI:-varmixup-aug}

for m in $METHODS; do
  if [[ ,$STAGES, == *,train,* ]]; then
    resume=(); [[ -e $OUT/$m/train_state.safetensors || -e $OUT/$m/checkpoint.safetensors ]] && resume=(--resume)
    $CLI train-fast --method "$m" --data-dir "$DATA" --out "$OUT/$m" --epochs 12 "${resume[@]}" --threads "$THREADS"
  fi
  if [[ ,$STAGES, == *,evidence,* ]]; then
    $CLI evidence "$OUT/$m" --data-dir "$DATA" --out "$OUT/$m/evidence.json" --threads "$THREADS" \
      --parts lam_selection,clean,corruptions,oblivious,published
  fi
done
if [[ ,$STAGES, == *,autoattack,* ]]; then
  $CLI evidence "$OUT/mixup" --data-dir "$DATA" --out "$OUT/mixup/evidence.json" --threads "$THREADS" \
    --parts autoattack --autoattack-n "${AA_N:-100}"
fi
python examples/evidence_summary.py "$OUT"
