#!/usr/bin/env bash
# The reproduction behind docs/reproduction.md: five methods trained with the fast CIFAR network and schedule,
# then the evidence protocol for each, then the tables. Every step resumes where it stopped.
#
#   STAGES=train,evidence METHODS="erm mixup" bash examples/reproduce_evidence.sh
#   STAGES=published bash examples/reproduce_evidence.sh              # the published attack on MI-OL, mixup model
#   STAGES=autoattack AA_N=100 bash examples/reproduce_evidence.sh     # AutoAttack-rand on MI-OL, mixup model
#
# The adaptive attacks are the costly parts (50 steps x 15 MI mixes per image), so they run on the mixup
# model, whose claims they test; ADAPTIVE_METHODS="mixup erm" adds others.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpg.tar.gz}
OUT=${OUT:-results/cifar10-fast}
METHODS=${METHODS:-erm mixup varmixup varmixup-residual vae-recon}
STAGES=${STAGES:-train,evidence,published}
ADAPTIVE_METHODS=${ADAPTIVE_METHODS:-mixup}
THREADS=${THREADS:-2}
CLI=${CLI:-varmixup-aug}

for m in $METHODS; do
  if [[ ,$STAGES, == *,train,* ]]; then
    resume=(); [[ -e $OUT/$m/train_state.safetensors || -e $OUT/$m/checkpoint.safetensors ]] && resume=(--resume)
    $CLI train-fast --method "$m" --data-dir "$DATA" --out "$OUT/$m" --epochs 12 "${resume[@]}" --threads "$THREADS"
  fi
  if [[ ,$STAGES, == *,evidence,* ]]; then
    $CLI evidence "$OUT/$m" --data-dir "$DATA" --out "$OUT/$m/evidence.json" --threads "$THREADS" \
      --parts lam_selection,clean,corruptions,oblivious
  fi
done
for m in $ADAPTIVE_METHODS; do
  if [[ ,$STAGES, == *,published,* ]]; then
    $CLI evidence "$OUT/$m" --data-dir "$DATA" --out "$OUT/$m/evidence.json" --threads "$THREADS" --parts published
  fi
  if [[ ,$STAGES, == *,autoattack,* ]]; then
    $CLI evidence "$OUT/$m" --data-dir "$DATA" --out "$OUT/$m/evidence.json" --threads "$THREADS" \
      --parts autoattack --autoattack-n "${AA_N:-100}"
  fi
done
python examples/evidence_summary.py "$OUT"
