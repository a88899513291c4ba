#!/usr/bin/env bash
# BLEU of a checkpoint on the test split: beam 5, length penalty 1; detokenized sacreBLEU (with its signature) and
# tokenized BLEU (fairseq's); for WMT (--wmt) compound-split BLEU too, after averaging the last N checkpoints.
#
#   scripts/evaluate.sh DATA_DIR CHECKPOINT_OR_SAVE_DIR [--wmt] [--average N]
# DATA_DIR is what `one-layer-lottery prepare` wrote (DATA_DIR/bin, DATA_DIR/raw/test.TGT).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: evaluate.sh DATA_DIR CHECKPOINT_OR_SAVE_DIR [--wmt] [--average N]}; CKPT=${2:?checkpoint}; shift 2
WMT=0; AVG=0
while [[ $# -gt 0 ]]; do case $1 in --wmt) WMT=1; shift;; --average) AVG=$2; shift 2;;
  *) echo "evaluate.sh: error: unknown option $1 (allowed: --wmt, --average N)" >&2; exit 1;; esac; done
[[ -d "$DATA/bin" ]] || { echo "evaluate.sh: error: '$DATA/bin' does not exist" >&2; exit 1; }
TGT=$(ls "$DATA/bin" | sed -n 's/^test\.[^-]*-\([^.]*\)\.\1\.bin$/\1/p' | head -1)
if [[ -d "$CKPT" ]]; then
  if [[ "$AVG" -gt 0 ]]; then
    mapfile -t LAST < <(ls -v "$CKPT"/checkpoint[0-9]*.pt 2>/dev/null | tail -n "$AVG")
    [[ ${#LAST[@]} -eq $AVG ]] || { echo "evaluate.sh: error: --average $AVG needs $AVG epoch checkpoints in $CKPT, found ${#LAST[@]}" >&2; exit 1; }
    one-layer-lottery average "${LAST[@]}" --out "$CKPT/checkpoint_avg$AVG.pt"
    CKPT=$CKPT/checkpoint_avg$AVG.pt
  else
    CKPT=$CKPT/checkpoint_best.pt
  fi
fi
OUT=${CKPT%.pt}.test
fairseq-generate "$DATA/bin" --user-dir one_layer_lottery --path "$CKPT" --beam 5 --lenpen 1 --batch-size 128 \
  --required-batch-size-multiple 1 --remove-bpe sentencepiece > "$OUT.txt" 2> "$OUT.log" \
  || { tail -n 5 "$OUT.log" >&2; exit 1; }
echo "checkpoint: $CKPT"
echo "detokenized sacreBLEU: $(one-layer-lottery bleu "$OUT.txt" "$DATA/raw/test.$TGT")"
echo "tokenized BLEU (fairseq): $(grep -o 'BLEU4 = [0-9.]*' "$OUT.txt" | tail -1)"
if [[ $WMT == 1 ]]; then
  echo "compound-split BLEU: $(one-layer-lottery bleu --compound-split "$OUT.txt" "$DATA/raw/test.$TGT")"
fi
