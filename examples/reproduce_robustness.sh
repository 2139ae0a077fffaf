#!/usr/bin/env bash
# Train ERM, mixup, VarMixup and residual VarMixup with one model (PreActResNet 32/64/128, 1 block per
# stage) and one schedule (SGD + Nesterov, lr 0.1 cosine, wd 5e-4, batch 128, pad-4 crop + flip), then
# evaluate each on the same 1,000 CIFAR-10 test images (--limit-test 1000 --seed 0): clean accuracy,
# ECE, corruptions, FGSM / PGD-10 oblivious (none, MI-PL, MI-OL) and EOT-PGD-10 through MI (adaptive),
# with MI's lam chosen per model on the 2,000 held-out training images (never on the test split).
#
# Writes runs/classifiers/<method>/ (checkpoints), results/<method>/ (eval.json, reliability.png,
# row.md), results/robustness.json (every number, one entry per method) and results/robustness.md.
#
# Usage (from anywhere):   examples/reproduce_robustness.sh
# Settings through the environment, e.g.:
#   EPOCHS=3 examples/reproduce_robustness.sh                  # the shipped VAE (pretrained "cifar10")
#   VAE=my_vae.safetensors examples/reproduce_robustness.sh    # another VAE checkpoint
#   STAGES=train examples/reproduce_robustness.sh              # only train (STAGES=eval: only evaluate)
#   DEVICE=cuda EPOCHS=30 examples/reproduce_robustness.sh
#   EVAL_ARGS="--adaptive-limit 200 --eot-iter 2 --attack-mi-samples 10 --adaptive-modes ol \
#              --select-limit 500 --select-mi-samples 10" ...    # the CPU-bounded run behind README's table
#   METHODS="erm varmixup" ... & METHODS="mixup varmixup-residual" ... &   # two side by side (THREADS=1)
# Re-running resumes unfinished training runs and replaces each method's row in the results.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../shared/data/cifar10-jpg.tar.gz}
VAE=${VAE-}   # empty: the shipped VAE, load_pretrained_vae("cifar10"); or a checkpoint path
EPOCHS=${EPOCHS:-2}
SEED=${SEED:-0}
DEVICE=${DEVICE:-auto}
THREADS=${THREADS:-}
RUNS=${RUNS:-runs/classifiers}
RESULTS=${RESULTS:-results}
TRAIN_ARGS=${TRAIN_ARGS:-}
EVAL_ARGS=${EVAL_ARGS:-}
PYTHON=${PYTHON:-.venv/bin/python}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
METHODS=(${METHODS:-erm mixup varmixup varmixup-residual})
STAGES=${STAGES:-train eval}

thread_args=()
if [[ -n $THREADS ]]; then thread_args=(--threads "$THREADS"); fi
vae_args=()
if [[ -n $VAE ]]; then
  if [[ ! -f $VAE ]]; then
    echo "VAE checkpoint $VAE not found; train it with varmixup-aug train-vae, or run with VAE= for the shipped one" >&2
    exit 2
  fi
  vae_args=(--vae "$VAE")
fi

if [[ $STAGES == *train* ]]; then
for method in "${METHODS[@]}"; do
  extra=()
  if [[ $method == varmixup* ]]; then extra+=("${vae_args[@]}"); fi
  if [[ -f $RUNS/$method/checkpoint.safetensors ]]; then extra+=(--resume); fi
  # shellcheck disable=SC2086
  "$PYTHON" -m varmixup_aug train-classifier --method "$method" --data-dir "$DATA" --out "$RUNS/$method" \
    --epochs "$EPOCHS" --batch-size 128 --lr 0.1 --weight-decay 5e-4 --schedule cosine --warmup-epochs 0.5 \
    --alpha 1.0 --holdout 2000 --holdout-seed 0 --seed "$SEED" --device "$DEVICE" \
    "${thread_args[@]}" "${extra[@]}" $TRAIN_ARGS
done
fi

if [[ $STAGES != *eval* ]]; then exit 0; fi
mkdir -p "$RESULTS"
for method in "${METHODS[@]}"; do
  # shellcheck disable=SC2086
  "$PYTHON" -m varmixup_aug evaluate --checkpoint "$RUNS/$method" --data-dir "$DATA" --name "$method" \
    --limit-test 1000 --seed 0 --eps 2/255,4/255,8/255 --pgd-steps 10 --eot-iter 5 --mi-samples 30 \
    --select-lam --lam-grid 0.3,0.4,0.5,0.6,0.7,0.8,0.9 --max-clean-drop 0.05 --select-limit 1000 \
    --severities 1,2,3 --out "$RESULTS/$method" \
    --results-json "$RESULTS/robustness.json" --results-md "$RESULTS/robustness.md" \
    --device "$DEVICE" "${thread_args[@]}" $EVAL_ARGS
done
echo "wrote $RESULTS/robustness.json and $RESULTS/robustness.md"
