"""`one-layer-lottery inspect`: what a checkpoint or artifact holds, and how masks overlap across depths."""

import argparse
import math
import os
import re
from collections import defaultdict

import numpy as np
import torch

from .io import read_checkpoint, save_figure
from .masks import packed_bits
from .models.options import mask_rule

_DEPTH = re.compile(r"^(.*(?:encoder|decoder))\.layers\.(\d+)\.(.+)$")  # encoder., encoder.sentence_encoder.


def masks_of(path: str):
    """(masks {module name: bool array}, model cfg, stored tensor bytes, artifact bytes or None) of a file."""
    from . import artifact

    head = b""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            head = f.read(8)
    if head and head[:2] != b"PK":  # torch checkpoints are zip files; artifacts are safetensors
        meta, tensors = artifact.read(path)
        masks = {n: artifact.mask_of(meta, tensors, n).reshape(s) for n, s in meta["masks"].items()}
        stored = sum(tensors[f"tensor:{k}"].numel() * tensors[f"tensor:{k}"].element_size() for k in meta["stored"])
        meta["packed_bits"] = {n: packed_bits(meta, n, m.size, tensors) for n, m in masks.items()}
        return masks, meta["cfg"]["model"], stored, os.path.getsize(path), meta
    state = read_checkpoint(path)
    cfg = artifact.supermask_cfg(state.get("cfg"), f"checkpoint {path!r}")
    scores, seen = {}, set()
    for k, v in state["model"].items():  # a module shared under two names (--share-all-embeddings) counts once
        if k.endswith(".scores") and v.data_ptr() not in seen:
            seen.add(v.data_ptr())
            scores[k[: -len(".scores")]] = v
    rule = mask_rule(argparse.Namespace(**cfg))
    masks = {k: rule.select(v.float()).numpy() for k, v in scores.items()}
    bits = {}
    for k, v in scores.items():  # what the artifact would store: nested coats are sized from their packed planes
        packed, entries = rule.pack(k, v.float(), torch.from_numpy(masks[k]))
        bits[k] = packed_bits(entries, k, masks[k].size, packed)
    tables = {v.data_ptr(): v for k, v in state["model"].items()
              if k.endswith(("embed_tokens.weight", "embed_tokens.stored_weight")) and v.dim() == 2}
    stored = sum(v.numel() * 2 for v in tables.values())  # fp16 in an artifact, a shared table once
    stored += sum(v.numel() * 4 for k, v in state["model"].items()  # a trained classification head, fp32
                  if k.startswith("classification_heads.") and k.endswith((".weight", ".bias")))
    rows = next((v.shape[0] for k, v in state["model"].items() if ".embed_tokens." in k and v.dim() == 2), None)
    heads = artifact.model_class(cfg).heads_in_state(state["model"])
    return masks, cfg, stored, None, {"heads": heads, "input_rows": rows, "packed_bits": bits}


def state_dict_stats(state: dict) -> dict[str, int]:
    """Counts from a model state dict (each shared weight appears once in it)."""
    scores = sum(t.numel() for k, t in state.items() if k.endswith(".scores"))
    frozen = sum(t.numel() for k, t in state.items()
                 if k.endswith(".frozen_weight") or ".shared_layer_weights." in k)
    tables = {t.data_ptr(): t for k, t in state.items()
              if k.endswith(("embed_tokens.weight", "embed_tokens.stored_weight")) and t.dim() == 2}
    pretrained = sum(t.numel() for t in tables.values())  # a table shared by encoder and decoder counts once
    other = sum(t.numel() for k, t in state.items() if t.is_floating_point()) - scores - frozen - pretrained
    return {"scores": scores, "mask_bits": scores, "frozen_random": frozen, "frozen_pretrained": pretrained,
            "other_float": other}


def dense_param_count(cfg: dict, n_src: int, n_tgt: int) -> int:
    """Parameters of fairseq's dense model of the same shape (biases and LayerNorms included), as its family counts
    them."""
    from .artifact import model_class

    return model_class(cfg).dense_param_count(cfg, n_src, n_tgt)


def overlap(masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Jaccard overlap of masks between depths, per module type (e.g. encoder.fc1): an L x L matrix."""
    by_type = defaultdict(dict)
    for name, m in masks.items():
        match = _DEPTH.match(name)
        if match:
            by_type[f"{match[1]}.{match[3]}"][int(match[2])] = m.ravel()
    out = {}
    for kind, depth in by_type.items():
        ms = [depth[i] for i in sorted(depth)]
        j = np.ones((len(ms), len(ms)))
        for a in range(len(ms)):
            for b in range(a + 1, len(ms)):
                union = np.logical_or(ms[a], ms[b]).sum()
                j[a, b] = j[b, a] = np.logical_and(ms[a], ms[b]).sum() / union if union else 1.0
        out[kind] = j
    return out


def row_entropy_bits(masks: dict[str, np.ndarray]) -> float:
    """Bits the outer masks carry as seen by a coder that knows each row's kept fraction: every row's binary entropy
    times its length, summed. Against the stored bits it bounds what entropy-coding the masks could save (at k = 0.5
    next to nothing; at k = 0.1 about half)."""
    total = 0.0
    for m in masks.values():
        rows = m.reshape(m.shape[0], -1) if m.ndim > 1 else m.reshape(1, -1)
        p = rows.mean(axis=1, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -(np.where(p > 0, p * np.log2(p), 0.0) + np.where(p < 1, (1 - p) * np.log2(1 - p), 0.0))
        total += float((h * rows.shape[1]).sum())
    return total


def inspect(path: str, png: str | None = None) -> dict:
    masks, cfg, stored, artifact_bytes, meta = masks_of(path)
    shared = bool(cfg.get("share_layer_weights"))
    modules = [{"name": n, "shape": list(m.shape), "remaining_ratio": round(float(m.mean()), 6),
                "bits": meta["packed_bits"][n]} for n, m in masks.items()]
    unique = {}
    for n, m in masks.items():
        match = _DEPTH.match(n)
        key = f"{match[1]}.{match[3]}" if (shared and match) else n
        unique[key] = m.size
    scores = sum(m.size for m in masks.values())
    bits = sum(m["bits"] for m in modules)  # with coats or N:M packing, not one a score
    n_src, n_tgt = vocab_sizes(masks, cfg, meta)
    dense = dense_param_count(cfg, n_src, n_tgt)
    random_weights = sum(unique.values())
    overlaps = overlap(masks)
    plain = {m["name"] for m in modules if m["bits"] >= masks[m["name"]].size}  # a bit a weight (coats: beyond)
    report = {
        "file": path, "arch": cfg.get("_name"), "remaining_ratio": cfg.get("remaining_ratio"),
        "share_layer_weights": shared, "modules": modules,
        "totals": {"scores_trainable": scores, "unique_random_weights": random_weights, "mask_bits": bits,
                   "stored_tensor_bytes": stored, "artifact_bytes": artifact_bytes,
                   "dense_params": dense, "dense_checkpoint_bytes": 4 * dense},
        # what the outer masks stored a bit a weight hold, known each row's kept fraction (N:M packings are left out:
        # their patterns already store less than a bit a weight)
        "mask_entropy": {"row_bits": round(row_entropy_bits({n: masks[n] for n in plain})),
                         "weights": sum(masks[n].size for n in plain)} if plain else None,
        # Table 1 of the paper: "Param (no mask)" and "Memory" (fp32 random weights + 1-bit masks + embeddings)
        "table1_row": {"params_no_mask": random_weights + stored // 2,
                       "memory_bytes_paper_style": 4 * random_weights + math.ceil(bits / 8) + 2 * stored,
                       "memory_bytes_artifact": artifact_bytes},
        "overlap": {k: v.round(4).tolist() for k, v in overlaps.items()},
    }
    if png and overlaps:
        plot_overlap(overlaps, png, title=f"{cfg.get('_name')}: mask overlap (Jaccard) between depths")
        report["png"] = png
    return report


def vocab_sizes(masks, cfg, meta):
    """(source or input vocabulary, target vocabulary or the classes of a classifier's first head)."""
    from .artifact import model_class

    return model_class(cfg).vocab_sizes(masks, meta or {})


def plot_overlap(overlaps: dict[str, np.ndarray], png: str, title: str) -> None:
    from .io import pyplot

    plt = pyplot()

    kinds = sorted(overlaps)
    cols = min(4, len(kinds))
    rows = math.ceil(len(kinds) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax, kind in zip(axes.ravel(), kinds):
        im = ax.imshow(overlaps[kind], vmin=0, vmax=1, cmap="viridis")
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("depth")
        ax.set_ylabel("depth")
        n = overlaps[kind].shape[0]
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
    for ax in axes.ravel()[len(kinds):]:
        ax.axis("off")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="Jaccard")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, png)


def format_report(r: dict) -> str:
    lines = [(f"{r['file']}: {r['arch']}  remaining ratio {r['remaining_ratio']}  "
              f"weights shared across depth: {r['share_layer_weights']}"), "",
             f"{'module':<44} {'shape':>14} {'kept':>8} {'bits':>12}"]
    for m in r["modules"]:
        lines.append(f"{m['name']:<44} {'x'.join(map(str, m['shape'])):>14} {m['remaining_ratio']:>8.4f} {m['bits']:>12,}")
    t, row = r["totals"], r["table1_row"]
    lines += ["", *(f"{k:>28}: {v:,}" if isinstance(v, int) else f"{k:>28}: {v}" for k, v in t.items()), "",
              "Table-1 row: params (no mask) {:.1f}M, memory (paper style) {:.1f} MB, artifact {}".format(
                  row["params_no_mask"] / 1e6, row["memory_bytes_paper_style"] / 1e6,
                  f"{row['memory_bytes_artifact'] / 1e6:.2f} MB" if row["memory_bytes_artifact"] else "n/a")]
    if r["mask_entropy"]:
        e = r["mask_entropy"]
        lines.append(f"mask entropy, each row's kept fraction known: {e['row_bits'] / e['weights']:.3f} bits a weight "
                     "(what entropy coding the 1-bit masks could at best reach)")
    lines.append("")
    for kind, mat in r["overlap"].items():
        lines.append(f"overlap {kind}: " + " | ".join(" ".join(f"{x:.2f}" for x in rowv) for rowv in mat))
    return "\n".join(lines)
