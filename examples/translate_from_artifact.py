"""Ship a model as seed + bits, then translate with it.

    python examples/translate_from_artifact.py CHECKPOINT DATA_DIR [N]

CHECKPOINT: a supermask checkpoint (e.g. work/demo/supermask/checkpoint_last.pt after `make demo`);
DATA_DIR: what `one-layer-lottery prepare` wrote for it (e.g. work/demo/data). Exports the artifact, prints its
size next to the checkpoint's, loads it back with no checkpoint and no random weights on disk, and translates the
first N test sentences (raw text in, raw text out, through the data directory's sentencepiece models).
"""

import glob
import os
import sys
import tempfile

import sentencepiece as spm

from one_layer_lottery import artifact


def main() -> None:
    ckpt, data = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.olt")
        report = artifact.export(ckpt, path)
        print(f"checkpoint {os.path.getsize(ckpt):,} bytes -> artifact {report['bytes']:,} bytes "
              f"({report['mask_bits']:,} mask bits)")
        hub = artifact.hub(path, beam=5, max_len_a=1.2, max_len_b=10)
        src, tgt = hub.task.cfg.source_lang, hub.task.cfg.target_lang
    spm_dir = os.path.join(data, "spm")
    encode = spm.SentencePieceProcessor(model_file=(glob.glob(f"{spm_dir}/spm.{src}.model")
                                                    or glob.glob(f"{spm_dir}/spm.joined.model"))[0])
    decode = spm.SentencePieceProcessor(model_file=(glob.glob(f"{spm_dir}/spm.{tgt}.model")
                                                    or glob.glob(f"{spm_dir}/spm.joined.model"))[0])
    with open(os.path.join(data, "raw", f"test.{src}"), encoding="utf-8") as f:
        sources = f.read().splitlines()[:n]
    with open(os.path.join(data, "raw", f"test.{tgt}"), encoding="utf-8") as f:
        references = f.read().splitlines()[:n]
    for s, r in zip(sources, references):
        pieces = hub.translate(" ".join(encode.encode(s, out_type=str)))
        print(f"source:     {s}\nhypothesis: {decode.decode(pieces.split())}\nreference:  {r}\n")


if __name__ == "__main__":
    main()
