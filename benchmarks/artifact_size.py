"""Artifact size vs its floor, vs a dense fp32 checkpoint, and vs the paper's Table 1 memory figures.

No training: masks come from the initial random scores (the size does not depend on which bits are set).
Dictionary sizes are the standard ones: IWSLT14 de-en 8848 de / 6632 en; WMT14 en-de one joined
dictionary of 40,000 (with --share-all-embeddings).

    python benchmarks/artifact_size.py [--json] [--archs iwslt_de_en,iwslt_de_en_wide,...] [--coats 0.25]

--coats adds, per architecture, the random-embedding model with a multicoated mask of those inner coats (artifact
format 5 stores each inner coat only where the coat around it keeps).
"""

import argparse
import json
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# the paper's Table 1 "Memory" column (one-layer random, pre-trained embeddings, k = 0.5), MB
PAPER_MEMORY_MB = {"iwslt_de_en": 28, "iwslt_de_en_wide": 71, "iwslt_de_en_deep": 29, "wmt_en_de": 96,
                   "wmt_en_de_wider": 227, "wmt_en_de_deeper": 98}
DICTS = {"iwslt": (8848, 6632, False), "wmt": (40000, 40000, True)}


def dictionary(n):
    from fairseq.data import Dictionary

    d = Dictionary()
    for i in range(n - d.nspecial):
        d.add_symbol(f"w{i}")
    return d


EMBEDDINGS = {False: "random (masked)", True: "pre-trained (fp16)"}  # a row's embeddings, as the table names them


def label(pretrained: bool, coats: str | None) -> str:
    return EMBEDDINGS[pretrained] + (f", coats {coats}" if coats else "")


def measure(shape: str, pretrained: bool, out_dir: str, coats: str | None = None) -> dict:
    from fairseq import options

    from one_layer_lottery import artifact
    from one_layer_lottery.models.supermask_transformer import SupermaskTransformerModel
    from one_layer_lottery.report import dense_param_count

    n_src, n_tgt, joined = DICTS[shape.split("_")[0]]
    src = dictionary(n_src)
    tgt = src if joined else dictionary(n_tgt)
    arch = f"one_layer_supermask_transformer_{shape}"
    flags = ["x", "--task", "translation", "--arch", arch]
    if joined:
        flags.append("--share-all-embeddings")
    args = options.parse_args_and_arch(options.get_training_parser(), flags)
    if pretrained:  # tables of the right shape; their values do not change the size
        args.pretrained_embeddings, args.pretrained_embeddings_in_checkpoint = "(benchmark)", True
    args.multicoat_ratios = coats
    torch.manual_seed(0)
    model = SupermaskTransformerModel.build_model(args, argparse.Namespace(source_dictionary=src,
                                                                          target_dictionary=tgt)).eval()
    cfg = {"model": {k: getattr(args, k) for k in vars(args) if not callable(getattr(args, k))}}
    cfg["model"]["_name"] = arch
    path = os.path.join(out_dir, f"{shape}.olt")
    r = artifact.export_model(model, json.loads(json.dumps(cfg, default=str)), src, tgt, path)
    dense_bytes = 4 * dense_param_count(cfg["model"], len(src), len(tgt))
    os.unlink(path)
    return {"arch": arch, "embeddings": EMBEDDINGS[pretrained], "coats": coats,
            "format_version": r["format_version"],
            "artifact_bytes": r["bytes"], "floor_bytes": r["floor"], "ratio_to_floor": r["bytes"] / r["floor"],
            "dense_fp32_bytes": dense_bytes, "ratio_to_dense": r["bytes"] / dense_bytes,
            "mask_bits": r["mask_bits"], "paper_memory_mb": PAPER_MEMORY_MB.get(shape) if pretrained else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", default="iwslt_de_en,iwslt_de_en_wide,iwslt_de_en_deep,wmt_en_de")
    p.add_argument("--json", action="store_true")
    p.add_argument("--coats", default=None, help="inner coats of an added multicoated row per architecture, e.g. 0.25")
    a = p.parse_args()
    rows = []
    kinds = [(False, None), (True, None)] + ([(False, a.coats)] if a.coats else [])
    width = max(len(label(*kind)) for kind in kinds)
    with tempfile.TemporaryDirectory() as tmp:
        for shape in a.archs.split(","):
            for pretrained, coats in kinds:
                rows.append(measure(shape, pretrained, tmp, coats))
                r = rows[-1]
                print(f"{r['arch']:<48} {label(pretrained, coats):<{width}} artifact {r['artifact_bytes'] / 1e6:8.2f} MB  "
                      f"floor {r['floor_bytes'] / 1e6:8.2f} MB  x{r['ratio_to_floor']:.4f}  "
                      f"dense fp32 {r['dense_fp32_bytes'] / 1e6:8.1f} MB  x{r['ratio_to_dense']:.4f}  "
                      f"paper {r['paper_memory_mb'] or '-'} MB", flush=True)
    if a.json:
        print(json.dumps({"rows": rows, "max_ratio_to_floor": max(r["ratio_to_floor"] for r in rows)}))


if __name__ == "__main__":
    main()
