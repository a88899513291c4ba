#!/usr/bin/env bash
# Stabilized lottery tickets (Brix et al. 2020) of a dense recipe, end to end:
#   1. train the dense model of CONFIG, saving its weights after N updates (the rewind point; 0: the init);
#   2. for every sparsity S: the converged model's magnitude mask (per tensor, exactly int(S*n) pruned), over the
#      weights saved at update N (--sign-only: their signs, one magnitude per tensor) -> OUT/ticket_S.pt;
#   3. retrain every ticket with the same recipe and its mask fixed (--prune-to S from update 0) -> OUT/ticket_S/;
#   4. BLEU of the dense model and of every ticket, when DATA_BIN is DATA_DIR/bin of `one-layer-lottery prepare`.
#
#   scripts/lottery-ticket.sh CONFIG DATA_BIN OUT --sparsity 0.5,0.7,0.9 --rewind-update N [--sign-only] \
#       [hydra overrides ...]
#   e.g. scripts/lottery-ticket.sh iwslt14_dense_small work/iwslt14/bin work/lt --sparsity 0.5,0.7,0.9 --rewind-update 1000
# A finished dense run in OUT/dense is reused. Magnitude pruning during training instead: the same config with
# +model.prune_to=S +model.prune_start_update=A +model.prune_end_update=B.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: lottery-ticket.sh CONFIG DATA_BIN OUT --sparsity S[,S...] --rewind-update N [--sign-only] [overrides]"
CONFIG=${1:?$usage}; DATA=${2:?$usage}; OUT=${3:?$usage}; shift 3
SPARSITY=""; REWIND=""; SIGN=""; OVERRIDES=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --sparsity) SPARSITY=${2:?--sparsity needs a value}; shift 2;;
    --rewind-update) REWIND=${2:?--rewind-update needs a value}; shift 2;;
    --sign-only) SIGN=--sign-only; shift;;
    --*) echo "lottery-ticket.sh: error: unknown option $1 (allowed: --sparsity, --rewind-update, --sign-only)" >&2
         exit 1;;
    *) OVERRIDES+=("$1"); shift;;
  esac
done
fail() { echo "lottery-ticket.sh: error: $*" >&2; exit 1; }
[[ -n "$SPARSITY" ]] || fail "--sparsity S[,S...] is required (fractions pruned, in [0, 1))"
[[ "$REWIND" =~ ^[0-9]+$ ]] || fail "--rewind-update '$REWIND' must be a non-negative number of updates"
IFS=, read -r -a LEVELS <<< "$SPARSITY"
for s in "${LEVELS[@]}"; do
  awk -v s="$s" 'BEGIN { exit !(s ~ /^[0-9]*\.?[0-9]+$/ && s >= 0 && s < 1) }' \
    || fail "--sparsity value '$s' is outside [0, 1): it is the fraction of each weight tensor pruned"
done
[[ -f "configs/$CONFIG.yaml" ]] || fail "no config configs/$CONFIG.yaml"
[[ -d "$DATA" ]] || fail "data directory '$DATA' does not exist"
mkdir -p "$OUT"
if [[ ! -f "$OUT/dense/weights_update$REWIND.pt" || ! -f "$OUT/dense/checkpoint_last.pt" ]]; then
  echo "[lottery-ticket] dense: training, rewind point at update $REWIND"
  scripts/train.sh "$CONFIG" "$DATA" "$OUT/dense" "+model.save_weights_at_updates=$REWIND" ${OVERRIDES[@]+"${OVERRIDES[@]}"}
fi
# the converged model: the best checkpoint where the recipe keeps one, else the last
FINAL=$OUT/dense/checkpoint_best.pt; [[ -f "$FINAL" ]] || FINAL=$OUT/dense/checkpoint_last.pt
for s in "${LEVELS[@]}"; do
  one-layer-lottery ticket "$OUT/dense" "$OUT/ticket_$s.pt" --sparsity "$s" --rewind-update "$REWIND" \
    --final "$FINAL" $SIGN
  echo "[lottery-ticket] sparsity $s: retraining with the mask fixed"
  scripts/train.sh "$CONFIG" "$DATA" "$OUT/ticket_$s" "checkpoint.restore_file=$(realpath "$OUT/ticket_$s.pt")" \
    checkpoint.reset_optimizer=true checkpoint.reset_lr_scheduler=true checkpoint.reset_dataloader=true \
    checkpoint.reset_meters=true "+model.prune_to=$s" ${OVERRIDES[@]+"${OVERRIDES[@]}"}
done
PREPARED=$(dirname "$(realpath "$DATA")")
if [[ -d "$PREPARED/raw" ]]; then
  for run in dense $(printf 'ticket_%s ' "${LEVELS[@]}"); do
    echo "[lottery-ticket] $run: $(scripts/evaluate.sh "$PREPARED" "$OUT/$run" | grep 'detokenized sacreBLEU')"
  done
else
  echo "[lottery-ticket] $PREPARED/raw not found: evaluate with scripts/evaluate.sh DATA_DIR $OUT/RUN"
fi
