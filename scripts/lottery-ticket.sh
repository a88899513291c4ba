#!/usr/bin/env bash
# Stabilized lottery tickets (Brix et al. 2020) of a dense recipe, end to end:
#   1. train the dense model of CONFIG, saving its weights after N updates (the rewind point; 0: the init);
#   2. for every fraction kept K: the converged model's magnitude mask (per tensor, exactly int((1-K)*n) pruned),
#      over the weights saved at update N (--sign-only: their signs, one magnitude per tensor) -> OUT/ticket_K.pt;
#   3. retrain every ticket with the same recipe and its mask fixed (--remaining-ratio K from update 0)
#      -> OUT/ticket_K/;
#   4. BLEU of the dense model and of every ticket, when DATA_BIN is DATA_DIR/bin of `one-layer-lottery prepare`.
#
#   scripts/lottery-ticket.sh CONFIG DATA_BIN OUT --kept 0.5,0.3,0.1 --rewind-update N [--sign-only] \
#       [hydra overrides ...]
#   e.g. scripts/lottery-ticket.sh iwslt14_dense_small work/iwslt14/bin work/lt --kept 0.5,0.3,0.1 --rewind-update 1000
# CONFIG is a dense recipe; it trains as the same architecture with pruned_ in front (pruned_transformer_*). A
# finished dense run in OUT/dense is reused. Magnitude pruning during training instead: the config with
# model._name=pruned_ARCH +model.remaining_ratio=K +model.prune_start_update=A +model.prune_end_update=B.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: lottery-ticket.sh CONFIG DATA_BIN OUT --kept K[,K...] --rewind-update N [--sign-only] [overrides]"
CONFIG=${1:?$usage}; DATA=${2:?$usage}; OUT=${3:?$usage}; shift 3
KEPT=""; REWIND=""; SIGN=""; OVERRIDES=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --kept) KEPT=${2:?--kept needs a value}; shift 2;;
    --rewind-update) REWIND=${2:?--rewind-update needs a value}; shift 2;;
    --sign-only) SIGN=--sign-only; shift;;
    --*) echo "lottery-ticket.sh: error: unknown option $1 (allowed: --kept, --rewind-update, --sign-only)" >&2
         exit 1;;
    *) OVERRIDES+=("$1"); shift;;
  esac
done
fail() { echo "lottery-ticket.sh: error: $*" >&2; exit 1; }
[[ -n "$KEPT" ]] || fail "--kept K[,K...] is required (fractions of each weight tensor kept, in (0, 1])"
[[ "$REWIND" =~ ^[0-9]+$ ]] || fail "--rewind-update '$REWIND' must be a non-negative number of updates"
IFS=, read -r -a LEVELS <<< "$KEPT"
for k in "${LEVELS[@]}"; do
  awk -v k="$k" 'BEGIN { exit !(k ~ /^[0-9]*\.?[0-9]+$/ && k > 0 && k <= 1) }' \
    || fail "--kept value '$k' is outside (0, 1]: it is the fraction of each weight tensor kept"
done
source scripts/config.sh
recipe_args "$CONFIG"
ARCH=$(awk '/^model:/ {m = 1; next} /^[a-z]/ {m = 0} m && $1 == "_name:" {print $2; exit}' "$CONFIG_MODEL_FILE")
[[ "$ARCH" == transformer* ]] || fail "config $CONFIG is not a dense fairseq transformer recipe (model._name: $ARCH)"
PRUNED="model._name=pruned_$ARCH"
[[ -d "$DATA" ]] || fail "data directory '$DATA' does not exist"
mkdir -p "$OUT"
if [[ ! -f "$OUT/dense/weights_update$REWIND.pt" || ! -f "$OUT/dense/checkpoint_last.pt" ]]; then
  echo "[lottery-ticket] dense: training, rewind point at update $REWIND"
  scripts/train.sh "$CONFIG" "$DATA" "$OUT/dense" "$PRUNED" "+model.save_weights_at_updates=$REWIND" \
    "+model.save_weights_dir=$(realpath "$OUT")/dense" \
    ${OVERRIDES[@]+"${OVERRIDES[@]}"}
fi
# the converged model: the best checkpoint where the recipe keeps one, else the last
FINAL=$OUT/dense/checkpoint_best.pt; [[ -f "$FINAL" ]] || FINAL=$OUT/dense/checkpoint_last.pt
for k in "${LEVELS[@]}"; do
  one-layer-lottery ticket "$OUT/dense" "$OUT/ticket_$k.pt" --remaining-ratio "$k" --rewind-update "$REWIND" \
    --final "$FINAL" $SIGN
  echo "[lottery-ticket] kept $k: retraining with the mask fixed"
  scripts/train.sh "$CONFIG" "$DATA" "$OUT/ticket_$k" "checkpoint.restore_file=$(realpath "$OUT/ticket_$k.pt")" \
    checkpoint.reset_optimizer=true checkpoint.reset_lr_scheduler=true checkpoint.reset_dataloader=true \
    checkpoint.reset_meters=true "$PRUNED" "+model.remaining_ratio=$k" ${OVERRIDES[@]+"${OVERRIDES[@]}"}
done
PREPARED=$(dirname "$(realpath "$DATA")")
if [[ -d "$PREPARED/raw" ]]; then
  for run in dense $(printf 'ticket_%s ' "${LEVELS[@]}"); do
    echo "[lottery-ticket] $run: $(scripts/evaluate.sh "$PREPARED" "$OUT/$run" | grep 'detokenized sacreBLEU')"
  done
else
  echo "[lottery-ticket] $PREPARED/raw not found: evaluate with scripts/evaluate.sh DATA_DIR $OUT/RUN"
fi
