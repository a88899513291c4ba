#!/usr/bin/env bash
# Real-data BLEU on 2 CPU cores: Multi30k de->en (test_2016_flickr), same shape and update budget for
#   1. fairseq's dense Transformer,
#   2. the one-layer supermask Transformer with masked random embeddings,
#   3. the one-layer supermask Transformer on the dense model's embeddings, frozen (the paper's way).
# Prints the BLEUs (detokenized sacreBLEU) and their ratios to dense; --json adds one JSON line at the end.
#
#   benchmarks/real_data_bleu.sh ../shared/data/multi30k [--json]
# Environment: UPDATES per model (default 2000: about 50 minutes here in all, by the measured rate), WORK (default work/real_data_bleu),
#   DIM FFN LAYERS HEADS VOCAB.
set -euo pipefail
cd "$(dirname "$0")/.."
RAW=${1:?usage: real_data_bleu.sh RAW_DIR [--json]}; JSON=${2:-}
[[ -d "$RAW" ]] || { echo "real_data_bleu: error: data directory '$RAW' does not exist" >&2; exit 1; }
WORK=${WORK:-work/real_data_bleu}; UPDATES=${UPDATES:-2000}
DIM=${DIM:-128}; FFN=${FFN:-256}; LAYERS=${LAYERS:-3}; HEADS=${HEADS:-4}; VOCAB=${VOCAB:-6000}
export PYTHONUNBUFFERED=1
start=$(date +%s)
mkdir -p "$WORK"
[[ -d "$WORK/data/bin" ]] || one-layer-lottery prepare "$RAW" "$WORK/data" --src de --tgt en --vocab-size "$VOCAB"
SHAPE=(--encoder-layers "$LAYERS" --decoder-layers "$LAYERS" --encoder-embed-dim "$DIM" --decoder-embed-dim "$DIM"
       --encoder-ffn-embed-dim "$FFN" --decoder-ffn-embed-dim "$FFN" --encoder-attention-heads "$HEADS"
       --decoder-attention-heads "$HEADS" --share-decoder-input-output-embed)
COMMON=(--task translation --adam-betas '(0.9,0.98)' --lr-scheduler inverse_sqrt --warmup-updates 1000
        --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-tokens 4096 --max-update "$UPDATES"
        --seed 1 --no-epoch-checkpoints --disable-validation --log-format simple --log-interval 250 --num-workers 0
        --user-dir one_layer_lottery)
run() {  # name, fairseq-train arguments
  local name=$1; shift
  if [[ ! -f "$WORK/$name/checkpoint_last.pt" ]]; then
    fairseq-train "$WORK/data/bin" "$@" "${SHAPE[@]}" "${COMMON[@]}" --save-dir "$WORK/$name" 2>&1 \
      | grep --line-buffered -E "train_inner|done training" | sed -u "s/^/[$name] /"
  fi
  fairseq-generate "$WORK/data/bin" --user-dir one_layer_lottery --path "$WORK/$name/checkpoint_last.pt" --beam 5 \
    --batch-size 128 --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10 --remove-bpe sentencepiece \
    > "$WORK/$name.gen" 2>/dev/null
  one-layer-lottery bleu "$WORK/$name.gen" "$WORK/data/raw/test.en" --json > "$WORK/$name.bleu.json"
  echo "[$name] $(cat "$WORK/$name.bleu.json")"
}
run dense --arch transformer --optimizer adam --lr 1e-3 --dropout 0.3
run supermask_random_emb --arch one_layer_supermask_transformer_tiny --optimizer masked_adam --lr 2e-3 --dropout 0.1
run supermask_pretrained_emb --arch one_layer_supermask_transformer_tiny --optimizer masked_adam --lr 2e-3 \
  --dropout 0.1 --pretrained-embeddings "$WORK/dense/checkpoint_last.pt"
python3 - "$WORK" "$UPDATES" "$(( $(date +%s) - start ))" "$JSON" <<'PY'
import json, sys
work, updates, seconds, as_json = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "--json"
b = {n: json.load(open(f"{work}/{n}.bleu.json"))["bleu"] for n in ("dense", "supermask_random_emb", "supermask_pretrained_emb")}
print(f"Multi30k de-en test_2016_flickr, {updates} updates each, {seconds} s in all")
for n, v in b.items():
    print(f"{n:>26}: BLEU {v:6.2f}   ratio to dense {v / b['dense']:.3f}")
if as_json:
    print(json.dumps({"updates": updates, "seconds": seconds, **{f"bleu_{n}": v for n, v in b.items()},
                      **{f"ratio_{n}": round(v / b["dense"], 4) for n, v in b.items() if n != "dense"}}))
PY
