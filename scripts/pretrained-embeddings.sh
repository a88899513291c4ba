#!/usr/bin/env bash
# Pre-trained embeddings the paper's way, in one go: train the dense model, then train the one-layer supermask
# model on the dense model's encoder/decoder embeddings (read from its checkpoint, frozen, not masked).
#
#   scripts/pretrained-embeddings.sh DATA_DIR SAVE_ROOT [iwslt14|wmt14] [small|wide|deep|base|wider|deeper]
# DATA_DIR is what the prepare scripts wrote (DATA_DIR/bin). Extra Hydra overrides: OVERRIDES="a=b c=d".
# The deep/deeper models use the small/base dense embeddings, as in the paper (Table 1, footnote 4).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: pretrained-embeddings.sh DATA_DIR SAVE_ROOT [task] [size]}; ROOT=${2:?SAVE_ROOT}
TASK=${3:-iwslt14}; SIZE=${4:-small}
case "$TASK/$SIZE" in
  iwslt14/small|iwslt14/deep) DENSE=small;; iwslt14/wide) DENSE=wide;;
  wmt14/base|wmt14/deeper) DENSE=base;; wmt14/wider) DENSE=wider;;
  *) echo "pretrained-embeddings.sh: error: unknown task/size '$TASK/$SIZE' (iwslt14: small wide deep; wmt14: base wider deeper)" >&2; exit 1;;
esac
read -r -a EXTRA <<< "${OVERRIDES:-}"
DENSE_DIR=$ROOT/${TASK}_dense_$DENSE
if [[ ! -f "$DENSE_DIR/checkpoint_best.pt" ]]; then
  echo "== training the dense ${TASK} $DENSE model -> $DENSE_DIR"
  scripts/train.sh "${TASK}_dense_$DENSE" "$DATA/bin" "$DENSE_DIR" "${EXTRA[@]}"
fi
echo "== training the one-layer supermask ${TASK} $SIZE model on its frozen embeddings"
scripts/train.sh "${TASK}_one_layer_${SIZE}_pretrained_emb" "$DATA/bin" "$ROOT/${TASK}_one_layer_${SIZE}_pretrained_emb" \
  model.pretrained_embeddings="$(realpath "$DENSE_DIR/checkpoint_best.pt")" "${EXTRA[@]}"
