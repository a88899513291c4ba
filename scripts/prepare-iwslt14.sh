#!/usr/bin/env bash
# IWSLT14 de-en (or any de-en raw parallel text) -> sentencepiece -> fairseq-preprocess.
#
#   scripts/prepare-iwslt14.sh --from RAW_DIR OUT_DIR    # local raw files: train/val|valid|dev/test*.{de,en}[.gz]
#   scripts/prepare-iwslt14.sh OUT_DIR                   # download IWSLT14 de-en first (needs network)
#
# Separate sentencepiece models per language (VOCAB, default 8000: close to fairseq's 8848/6632 dictionaries).
# Example, offline here: scripts/prepare-iwslt14.sh --from ../shared/data/multi30k work/multi30k
set -euo pipefail
FROM=""
if [[ "${1:-}" == "--from" ]]; then FROM=${2:?--from needs a directory}; shift 2; fi
OUT=${1:?usage: prepare-iwslt14.sh [--from RAW_DIR] OUT_DIR}
VOCAB=${VOCAB:-8000}
if [[ -z "$FROM" ]]; then
  FROM=$OUT/download
  mkdir -p "$FROM"
  URL=${IWSLT14_URL:-http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz}
  echo "[prepare-iwslt14] downloading $URL"
  curl -fL "$URL" | tar xz -C "$FROM"
  # the TED transcripts: strip XML markup, keep one sentence per line (as fairseq's prepare-iwslt14.sh does)
  python3 - "$FROM/de-en" "$FROM" <<'PY'
import glob, os, re, sys
src, out = sys.argv[1], sys.argv[2]
for lang in ("de", "en"):
    with open(os.path.join(src, f"train.tags.de-en.{lang}"), encoding="utf-8") as f, \
         open(os.path.join(out, f"train.{lang}"), "w", encoding="utf-8") as g:
        g.writelines(line.strip() + "\n" for line in f if not line.lstrip().startswith("<"))
    for split, pattern in (("valid", "IWSLT14.TED.dev2010"), ("test", "IWSLT14.TED.tst201*")):
        with open(os.path.join(out, f"{split}.{lang}"), "w", encoding="utf-8") as g:
            for path in sorted(glob.glob(os.path.join(src, f"{pattern}.de-en.{lang}.xml"))):
                for line in open(path, encoding="utf-8"):
                    m = re.match(r"\s*<seg[^>]*>\s*(.*?)\s*</seg>", line)
                    if m:
                        g.write(m.group(1) + "\n")
PY
fi
one-layer-lottery prepare "$FROM" "$OUT" --src de --tgt en --vocab-size "$VOCAB"
