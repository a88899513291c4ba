# Sourced by the recipes: a recipe's name (configs/generate.py) -> fairseq-hydra-train's arguments.
#   TASK_MODEL (iwslt14_one_layer_small_random_emb, glue_mnli_dense_base, ...): --config-name TASK GROUP=MODEL
#   any other name (cpu_tiny): --config-name NAME
# Sets CONFIG_ARGS (an array) and CONFIG_MODEL_FILE (the yaml that names the model); exits with one line if the
# recipe does not exist.
recipe_args() {
  local name=$1 task group
  for task in iwslt14 wmt14 glue_qqp glue_mnli; do
    if [[ $name == "${task}_"* ]]; then
      group=${task}_model; [[ $task == glue_* ]] && group=glue_model
      CONFIG_MODEL_FILE=configs/$group/${name#"${task}_"}.yaml
      CONFIG_ARGS=(--config-name "$task" "$group=${name#"${task}_"}")
      [[ -f $CONFIG_MODEL_FILE ]] && return 0
      echo "$(basename "$0"): error: no recipe $name (models of $task: configs/$group/)" >&2; exit 1
    fi
  done
  CONFIG_MODEL_FILE=configs/$name.yaml
  CONFIG_ARGS=(--config-name "$name")
  [[ -f $CONFIG_MODEL_FILE ]] || { echo "$(basename "$0"): error: no config configs/$name.yaml" >&2; exit 1; }
}
