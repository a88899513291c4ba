"""Ship a model as seed + bits, then translate plain text with it.

    python examples/translate_from_artifact.py CHECKPOINT DATA_DIR [N]

CHECKPOINT: a supermask checkpoint (e.g. work/demo/supermask/checkpoint_last.pt after `make demo`);
DATA_DIR: what `one-layer-lottery prepare` wrote for it (e.g. work/demo/data). Exports the artifact (which takes
the data directory's sentencepiece models along), prints its size next to the checkpoint's, loads it back with no
checkpoint, no random weights and no data directory on disk, and translates the first N test sentences: plain
text in, plain text out.
"""

import os
import sys
import tempfile

from one_layer_lottery import artifact


def main() -> None:
    ckpt, data = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.olt")
        report = artifact.export(ckpt, path, data=os.path.join(data, "bin"))
        print(f"checkpoint {os.path.getsize(ckpt):,} bytes -> artifact {report['bytes']:,} bytes "
              f"({report['mask_bits']:,} mask bits, sentencepiece models included)")
        hub = artifact.hub(path, beam=5, max_len_a=1.2, max_len_b=10)
        src, tgt = hub.task.cfg.source_lang, hub.task.cfg.target_lang
        with open(os.path.join(data, "raw", f"test.{src}"), encoding="utf-8") as f:
            sources = f.read().splitlines()[:n]
        with open(os.path.join(data, "raw", f"test.{tgt}"), encoding="utf-8") as f:
            references = f.read().splitlines()[:n]
        for s, r in zip(sources, references):
            print(f"source:     {s}\nhypothesis: {hub.translate(s)}\nreference:  {r}\n")


if __name__ == "__main__":
    main()
