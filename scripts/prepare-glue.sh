#!/usr/bin/env bash
# A GLUE task's TSV files -> BPE -> fairseq's sentence_prediction layout (OUT/input0, OUT/input1, OUT/label), offline.
#
#   scripts/prepare-glue.sh TASK RAW_DIR OUT [--gpt2-bpe DIR [--dict roberta.base/dict.txt]] [--vocab-size N]
#   e.g. scripts/prepare-glue.sh RTE ../shared/data/glue/RTE work/glue/RTE
# TASK: SST-2, MRPC, RTE, QQP or MNLI (RAW_DIR holds train.tsv and dev.tsv, or dev_matched.tsv for MNLI; .gz is
# fine). With --gpt2-bpe (a folder with fairseq's encoder.json and vocab.bpe) the text gets RoBERTa's BPE, and
# with --dict RoBERTa's dictionary, so that a pre-trained RoBERTa's embeddings fit; otherwise a sentencepiece
# model is learned on the task's training text.
set -euo pipefail
cd "$(dirname "$0")/.."
TASK=${1:?usage: prepare-glue.sh TASK RAW_DIR OUT [options]}; RAW=${2:?RAW_DIR}; OUT=${3:?OUT}; shift 3
exec one-layer-lottery prepare-glue "$TASK" "$RAW" "$OUT" "$@"
