#!/usr/bin/env bash
# WMT14 en-de raw parallel text -> joined sentencepiece (32k-40k) -> fairseq-preprocess --joined-dictionary.
#
#   scripts/prepare-wmt14-en-de.sh --from RAW_DIR OUT_DIR   # train/valid(newstest2013)/test(newstest2014).{en,de}[.gz]
#   scripts/prepare-wmt14-en-de.sh OUT_DIR                  # download with sacrebleu's test sets + your own train
#
# The 4.5M-pair training corpus is not fetched automatically (several sources and licences): put it in RAW_DIR as
# train.en / train.de. Without --from, RAW_DIR=$OUT/download must already hold train.*; valid and test are fetched.
set -euo pipefail
FROM=""
if [[ "${1:-}" == "--from" ]]; then FROM=${2:?--from needs a directory}; shift 2; fi
OUT=${1:?usage: prepare-wmt14-en-de.sh [--from RAW_DIR] OUT_DIR}
VOCAB=${VOCAB:-32000}
if [[ -z "$FROM" ]]; then
  FROM=$OUT/download
  mkdir -p "$FROM"
  for pair in "wmt13 valid" "wmt14/full test"; do
    set -- $pair
    sacrebleu -t "$1" -l en-de --echo src > "$FROM/$2.en"
    sacrebleu -t "$1" -l en-de --echo ref > "$FROM/$2.de"
  done
  [[ -f "$FROM/train.en" && -f "$FROM/train.de" ]] || {
    echo "prepare-wmt14-en-de: error: put the WMT14 training corpus in $FROM/train.en and $FROM/train.de" >&2; exit 1; }
fi
one-layer-lottery prepare "$FROM" "$OUT" --src en --tgt de --vocab-size "$VOCAB" --joined
