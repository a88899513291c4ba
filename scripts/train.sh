#!/usr/bin/env bash
# Train one recipe of configs/ with fairseq-hydra-train.
#
#   scripts/train.sh CONFIG DATA_BIN SAVE_DIR [hydra overrides ...]
#   e.g. scripts/train.sh iwslt14_one_layer_small_random_emb work/iwslt14/bin ckpt/one_layer_small
#        scripts/train.sh iwslt14_one_layer_small_pretrained_emb work/iwslt14/bin ckpt/ol_pre \
#            model.pretrained_embeddings=ckpt/dense_small/checkpoint_best.pt
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:?usage: train.sh CONFIG DATA_BIN SAVE_DIR [overrides]}; DATA=${2:?DATA_BIN}; SAVE=${3:?SAVE_DIR}; shift 3
source scripts/config.sh
recipe_args "$CONFIG"
[[ -d "$DATA" ]] || { echo "train.sh: error: data directory '$DATA' does not exist" >&2; exit 1; }
export PYTHONUNBUFFERED=1
fairseq-hydra-train --config-dir "$PWD/configs" "${CONFIG_ARGS[@]}" task.data="$(realpath "$DATA")" \
  common.user_dir="$PWD/one_layer_lottery" checkpoint.save_dir="$(realpath -m "$SAVE")" \
  hydra.run.dir="$(realpath -m "$SAVE")/hydra" "$@"
