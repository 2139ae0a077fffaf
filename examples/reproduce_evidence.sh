#!/usr/bin/env bash
# The reproduction behind docs/reproduction.md: the methods trained with the fast CIFAR network and schedule,
# then the evidence protocol for each, then the tables. Every step resumes where it stopped, and a finished
# training run (its train_report.json is there) is not trained again.
#
# The papers' regime (no label smoothing, Beta(1, 1), per-sample lam), one seed at a time:
#   OUT=results/cifar10-papers/seed0 SEED=0 LABEL_SMOOTHING=0 bash examples/reproduce_evidence.sh
#   OUT=results/cifar10-papers-long/seed0 SEED=0 LABEL_SMOOTHING=0 EPOCHS=40 METHODS="erm mixup" \
#     STAGES=train,evidence bash examples/reproduce_evidence.sh
# The airbench recipe (label smoothing 0.2, the ablation in results/cifar10-fast):
#   STAGES=train,evidence METHODS="erm mixup" bash examples/reproduce_evidence.sh
#   STAGES=published bash examples/reproduce_evidence.sh              # the published attack on MI-OL, mixup model
#   STAGES=autoattack AA_N=100 bash examples/reproduce_evidence.sh     # AutoAttack-rand on MI-OL, mixup model
#   STAGES=adaptive bash examples/reproduce_evidence.sh    # EOT-PGD sweep, APGD with EOT, binarization test
#     (SWEEP_N, APGD_N, BINARIZATION_N: images each; the attacker in bf16 where the CPU has bf16 units, else
#     fp32 (ATTACK_PRECISION=auto; each part keeps the precision it was started with); BINARIZATION_DECOYS=100
#     adds random corners to the inner class of each binary task, its own part, where random corners fail)
#   STAGES=transfer bash examples/reproduce_evidence.sh    # PGD-10 made on $OUT/erm, scored by every method
#   STAGES=reference METHODS="erm mixup" bash examples/reproduce_evidence.sh  # the MI reference code's pool
#     (test split, training augmentation, 10,000 images): clean and PGD-10 8/255, evidence-reference-pool.json
#
# The adaptive attacks are the costly parts (50 steps x 15 MI mixes per image), so they run on the mixup
# model, whose claims they test; ADAPTIVE_METHODS="mixup erm" adds others.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpg.tar.gz}
OUT=${OUT:-results/cifar10-fast}
SEED=${SEED:-0}
LABEL_SMOOTHING=${LABEL_SMOOTHING:-0.2}
EPOCHS=${EPOCHS:-12}
PRECISION=${PRECISION:-auto}
ADV_ATTACK=${ADV_ATTACK:-n-fgsm}  # adv-train's step: FGSM-RS overfits catastrophically in this recipe
if [[ $LABEL_SMOOTHING == 0.2 ]]; then
  DEFAULT_METHODS="erm mixup varmixup varmixup-residual vae-recon"
  DEFAULT_PARTS=lam_selection,clean,corruptions,oblivious
else
  DEFAULT_METHODS="erm mixup adv-train varmixup varmixup-residual vae-recon"
  DEFAULT_PARTS=lam_selection,calibration,clean,corruptions,oblivious
fi
METHODS=${METHODS:-$DEFAULT_METHODS}
EVIDENCE_PARTS=${EVIDENCE_PARTS:-$DEFAULT_PARTS}
STAGES=${STAGES:-train,evidence,published}
ADAPTIVE_METHODS=${ADAPTIVE_METHODS:-mixup}
# images per adaptive part (a larger n later extends the same files); verdicts always in fp32
SWEEP_N=${SWEEP_N:-100}
APGD_N=${APGD_N:-100}
BINARIZATION_N=${BINARIZATION_N:-50}
BINARIZATION_DECOYS=${BINARIZATION_DECOYS:-0}
ATTACK_PRECISION=${ATTACK_PRECISION:-auto}
THREADS=${THREADS:-2}
CLI=${CLI:-varmixup-aug}
# files made before the stratified test subset resume with the draw they were made with
SUBSET=(); [[ $OUT == results/cifar10-fast ]] && SUBSET=(--test-subset random)

for m in $METHODS; do
  if [[ ,$STAGES, == *,train,* && ! -e $OUT/$m/train_report.json ]]; then
    resume=(); [[ -e $OUT/$m/train_state.safetensors ]] && resume=(--resume)
    $CLI train-fast --method "$m" --data-dir "$DATA" --out "$OUT/$m" --epochs "$EPOCHS" --seed "$SEED" \
      --label-smoothing "$LABEL_SMOOTHING" --precision "$PRECISION" --adv-attack "$ADV_ATTACK" "${resume[@]}" \
      --threads "$THREADS"
  fi
  if [[ ,$STAGES, == *,evidence,* ]]; then
    $CLI evidence "$OUT/$m" --data-dir "$DATA" --out "$OUT/$m/evidence.json" --threads "$THREADS" \
      --parts "$EVIDENCE_PARTS" "${SUBSET[@]}"
  fi
  if [[ ,$STAGES, == *,reference,* ]]; then
    $CLI evidence "$OUT/$m" --data-dir "$DATA" --out "$OUT/$m/evidence-reference-pool.json" --threads "$THREADS" \
      --parts clean,oblivious --oblivious-eps 8/255 --pool-source test-augmented --pool-size 10000 "${SUBSET[@]}"
  fi
  if [[ ,$STAGES, == *,transfer,* ]]; then
    $CLI evidence "$OUT/$m" --data-dir "$DATA" --out "$OUT/$m/evidence.json" --threads "$THREADS" \
      --parts transfer --transfer-source "$OUT/erm" "${SUBSET[@]}"
  fi
done
for m in $ADAPTIVE_METHODS; do
  if [[ ,$STAGES, == *,published,* ]]; then
    $CLI evidence "$OUT/$m" --data-dir "$DATA" --out "$OUT/$m/evidence.json" --threads "$THREADS" --parts published \
      "${SUBSET[@]}"
  fi
  if [[ ,$STAGES, == *,adaptive,* ]]; then
    $CLI evidence "$OUT/$m" --data-dir "$DATA" --out "$OUT/$m/evidence.json" --threads "$THREADS" \
      --parts eot_sweep,apgd,binarization --attack-precision "$ATTACK_PRECISION" --eot-sweep-n "$SWEEP_N" \
      --apgd-n "$APGD_N" --binarization-n "$BINARIZATION_N" --binarization-decoys "$BINARIZATION_DECOYS" \
      "${SUBSET[@]}"
  fi
  if [[ ,$STAGES, == *,autoattack,* ]]; then
    $CLI evidence "$OUT/$m" --data-dir "$DATA" --out "$OUT/$m/evidence.json" --threads "$THREADS" \
      --parts autoattack --autoattack-n "${AA_N:-100}" "${SUBSET[@]}"
  fi
done
# the tables of docs/reproduction.md and README, from every committed result (SUMMARY=0 skips them)
if [[ ${SUMMARY:-1} != 0 ]]; then python examples/evidence_summary.py results/cifar10-fast; fi
