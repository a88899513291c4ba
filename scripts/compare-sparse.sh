#!/usr/bin/env bash
# Random-weight supermasks beside trained-weight pruning on one corpus: one-layer and standard supermasks,
# magnitude pruning and stabilized lottery tickets at the same fractions kept, dense as the line; BLEU, bytes
# (counted the same way for every method) and the layer analysis -> WORK/sparse.csv, sparse.png, analysis.png.
#
#   scripts/compare-sparse.sh RAW_DIR [--kept 0.5,0.3,0.1] [--updates 500] [--methods ...] [--work work/sparse]
#   e.g. scripts/compare-sparse.sh ../shared/data/multi30k --jobs 2 --threads 1
# (benchmarks/sparse_comparison.py --help lists every option.)
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/sparse_comparison.py "$@"
