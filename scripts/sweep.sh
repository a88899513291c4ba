#!/usr/bin/env bash
# A sweep through Hydra multirun (paper Figs. 2-5), then BLEU of every run collected into one CSV and a plot.
#
#   scripts/sweep.sh CONFIG DATA_DIR SWEEP_DIR [hydra sweep overrides ...]
#   e.g. BLEU vs remaining ratio, one-layer vs standard, 3 seeds (Fig. 2), CPU-sized:
#   scripts/sweep.sh cpu_tiny work/demo/data work/sweep_ratio \
#       model.remaining_ratio=0.1,0.3,0.5,0.7,0.9 \
#       model._name=one_layer_supermask_transformer_tiny,supermask_transformer_tiny common.seed=1,2,3
#   Fig. 5: model.weight_init=kaiming_uniform,xavier_uniform; Fig. 3: the *_pretrained_emb configs;
#   Fig. 4: model._name over the small/wide/deep architectures.
# Locally Hydra's basic launcher runs the jobs one after another. On SLURM, install hydra-submitit-launcher and add
#   hydra/launcher=submitit_slurm hydra.launcher.gpus_per_node=1 hydra.launcher.timeout_min=4000
# DATA_DIR is what `one-layer-lottery prepare` wrote (DATA_DIR/bin, DATA_DIR/raw), or for sentence classification
# what `one-layer-lottery prepare-glue` wrote (DATA_DIR/input0, DATA_DIR/label): then dev accuracy is collected,
# e.g. Figs. 6-7 (accuracy vs k, one-layer vs standard RoBERTa):
#   scripts/sweep.sh glue_mnli_one_layer_base_pretrained_emb work/glue/MNLI work/sweep_mnli \
#       model.pretrained_embeddings=roberta.base/model.pt model.remaining_ratio=0.1,0.3,0.5,0.7,0.9 \
#       model._name=one_layer_supermask_roberta_base,supermask_roberta_base
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:?usage: sweep.sh CONFIG DATA_DIR SWEEP_DIR [sweep overrides]}; DATA=${2:?DATA_DIR}; SWEEP=${3:?SWEEP_DIR}
shift 3
source scripts/config.sh
recipe_args "$CONFIG"
BIN=$DATA/bin; [[ -d "$DATA/label" ]] && BIN=$DATA  # a GLUE task: sentence_prediction reads DATA itself
[[ -d "$BIN" ]] || { echo "sweep.sh: error: '$DATA/bin' does not exist" >&2; exit 1; }
SWEEP=$(realpath -m "$SWEEP")
export PYTHONUNBUFFERED=1
fairseq-hydra-train -m --config-dir "$PWD/configs" "${CONFIG_ARGS[@]}" task.data="$(realpath "$BIN")" \
  common.user_dir="$PWD/one_layer_lottery" hydra.sweep.dir="$SWEEP" hydra.sweep.subdir='${hydra.job.num}' \
  'checkpoint.save_dir=${hydra:sweep.dir}/${hydra:job.num}/ckpt' "$@"
python3 -m one_layer_lottery.sweep "$SWEEP" "$DATA" --csv "$SWEEP/results.csv" --png "$SWEEP/results.png"
