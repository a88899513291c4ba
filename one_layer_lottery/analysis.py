"""`one-layer-lottery analyze`: how sparse models differ from a dense reference, layer by layer (Movva & Zhao 2020).

For every model against the reference, on held-out sentences (teacher-forced):
* kept fraction of each layer's weight matrices (zeros of a pruned dense model; masks of a supermask model);
* similarity of each layer's mean-pooled output states: linear CKA (Kornblith et al. 2019), 1 = the same
  representation up to rotation and scale;
* attention agreement of each attention module: 1 - total variation distance between the two models'
  head-averaged attention distributions, averaged over query positions (1 = identical attention).
"""

import math
import os
import re
from collections import defaultdict

import torch
from torch import Tensor

from .errors import ConfigError
from .io import read_checkpoint, save_figure

_LAYER = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.")
ATTENTIONS = (("encoder", "self_attn"), ("decoder", "self_attn"), ("decoder", "encoder_attn"))


def load(path: str, data: str):
    """(model in eval mode, task) of a fairseq checkpoint (dense, pruned or supermask)."""
    from fairseq import checkpoint_utils

    read_checkpoint(path)  # one clear line for a missing or unreadable file
    try:
        models, _, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides={"data": data})
    except (FileNotFoundError, RuntimeError) as e:
        raise ConfigError(f"cannot load {path!r} on data {data!r}: {str(e).splitlines()[0][:200]}") from None
    return models[0].eval(), task


def kept_fractions(model) -> dict[str, tuple[int, int]]:
    """{module name: (kept, total)} over the weight matrices and token tables a pruning or a mask acts on."""
    from .pruning import is_prunable
    from .supermask import SupermaskModule

    out = {}
    for name, m in model.named_modules():
        if isinstance(m, SupermaskModule):
            keep = m.mask()
            out[name] = (int(keep.sum()), keep.numel())
    seen = {id(m.scores) for m in model.modules() if isinstance(m, SupermaskModule)}
    for name, p in model.named_parameters():
        if id(p) not in seen and is_prunable(name, p):
            out[name[: -len(".weight")]] = (int(torch.count_nonzero(p)), p.numel())
    return out


def layer_of(module: str) -> str:
    """'encoder.layers.2.fc1' -> 'encoder.2'; tables and the rest keep their name."""
    m = _LAYER.match(module)
    return f"{m[1]}.{m[2]}" if m else module


def batches(task, subset: str, sentences: int, max_tokens: int = 4096) -> list[dict]:
    try:
        task.load_dataset(subset)
    except FileNotFoundError as e:
        raise ConfigError(f"held-out subset {subset!r}: {e}") from None
    itr = task.get_batch_iterator(dataset=task.dataset(subset), max_tokens=max_tokens, max_positions=None, ignore_invalid_inputs=True,
                                  required_batch_size_multiple=1, seed=1, num_workers=0)
    out, n = [], 0
    for sample in itr.next_epoch_itr(shuffle=False):
        out.append(sample)
        n += sample["nsentences"]
        if n >= sentences:
            break
    return out


@torch.no_grad()
def record(model, samples: list[dict]) -> dict:
    """Mean-pooled output states of every layer and head-averaged attention maps of every attention module."""
    states, attn, hooks = defaultdict(list), defaultdict(list), []
    current = {}

    def on_layer(name, side):
        def hook(module, args, output):
            x = output[0] if isinstance(output, tuple) else output  # (time, batch, dim)
            pad = current["src_pad" if side == "encoder" else "tgt_pad"]  # (batch, time)
            keep = (~pad).t().unsqueeze(-1).to(x.dtype)
            states[name].append(((x * keep).sum(0) / keep.sum(0).clamp_min(1)).float())
        return hook

    def force_weights(module, args, kwargs):
        kwargs["need_weights"], kwargs["need_head_weights"] = True, False
        return args, kwargs

    def on_attention(name, side):
        def hook(module, args, output):
            w = output[1]  # (batch, queries, keys), averaged over heads
            qpad = current["src_pad" if side == "encoder" else "tgt_pad"]
            attn[name].append((w.float(), qpad))
        return hook

    for side in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(model, side).layers):
            hooks.append(layer.register_forward_hook(on_layer(f"{side}.{i}", side)))
            for s, attr in ATTENTIONS:
                if s == side and getattr(layer, attr, None) is not None:
                    m = getattr(layer, attr)
                    hooks.append(m.register_forward_pre_hook(force_weights, with_kwargs=True))
                    hooks.append(m.register_forward_hook(on_attention(f"{side}.{i}.{attr}", side)))
    try:
        for sample in samples:
            net = sample["net_input"]
            current["src_pad"] = net["src_tokens"].eq(model.encoder.padding_idx)
            current["tgt_pad"] = net["prev_output_tokens"].eq(model.decoder.padding_idx)
            model(**net)
    finally:
        for h in hooks:
            h.remove()
    return {"states": {k: torch.cat(v) for k, v in states.items()}, "attention": dict(attn)}


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA of two (examples, features) matrices."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    num = (y.t() @ x).pow(2).sum()
    den = (x.t() @ x).pow(2).sum().sqrt() * (y.t() @ y).pow(2).sum().sqrt()
    return float(num / den) if den > 0 else float("nan")


def attention_agreement(a: list, b: list) -> float:
    """Mean over real query positions of sum_k min(p_k, q_k) = 1 - total variation distance."""
    total, count = 0.0, 0
    for (p, pad), (q, _) in zip(a, b):
        overlap = torch.minimum(p, q).sum(-1)  # (batch, queries)
        real = ~pad
        total += float(overlap[real].sum())
        count += int(real.sum())
    return total / count if count else float("nan")


def compare(reference: str, models: list[str], data: str, labels: list[str] | None = None, subset: str = "valid",
            sentences: int = 500) -> dict:
    labels = labels or [os.path.basename(os.path.dirname(os.path.abspath(p))) or p for p in models]
    if len(labels) != len(models):
        raise ConfigError(f"--labels names {len(labels)} models; {len(models)} were given")
    ref_model, task = load(reference, data)
    samples = batches(task, subset, sentences)
    ref = record(ref_model, samples)
    out = {"reference": reference, "subset": subset, "sentences": sum(s["nsentences"] for s in samples),
           "kept": {}, "models": {}}
    for label, path in zip(labels, models):
        model, other_task = load(path, data)
        for side in ("source_dictionary", "target_dictionary"):
            if getattr(other_task, side).symbols != getattr(task, side).symbols:
                raise ConfigError(f"{path!r} has another {side.split('_')[0]} dictionary than {reference!r}")
        rec = record(model, samples)
        kept = kept_fractions(model)
        by_layer = defaultdict(lambda: [0, 0])
        for name, (k, n) in kept.items():
            by_layer[layer_of(name)][0] += k
            by_layer[layer_of(name)][1] += n
        # layers both models have (a deeper or shallower model is compared where it overlaps)
        cka = {k: round(linear_cka(v, rec["states"][k]), 4) for k, v in ref["states"].items() if k in rec["states"]}
        agree = {k: round(attention_agreement(v, rec["attention"][k]), 4)
                 for k, v in ref["attention"].items() if k in rec["attention"]}
        total = [sum(v[0] for v in kept.values()), sum(v[1] for v in kept.values())]
        out["models"][label] = {
            "path": path, "kept_total": round(total[0] / total[1], 4) if total[1] else None,
            "kept_by_layer": {k: round(v[0] / v[1], 4) for k, v in sorted(by_layer.items())},
            "kept_by_module": {k: round(v[0] / v[1], 4) for k, v in kept.items()},
            "cka_by_layer": cka, "attention_agreement": agree}
    return out


def _order(name: str) -> tuple:
    m = re.match(r"(encoder|decoder)\.(\d+)", name)
    return (0 if m and m[1] == "encoder" else 1, int(m[2]) if m else -1, name)


def format_table(r: dict) -> str:
    layers = sorted(next(iter(r["models"].values()))["cka_by_layer"], key=_order)
    lines = [f"reference {r['reference']}, {r['sentences']} {r['subset']} sentences (teacher-forced)", ""]
    head = f"{'model':<24} {'kept':>6}  " + " ".join(f"{x:>11}" for x in layers)
    for what, key in (("kept fraction", "kept_by_layer"), ("CKA to reference", "cka_by_layer")):
        lines += [f"{what} per layer", head]
        for label, m in r["models"].items():
            vals = " ".join(f"{m[key].get(x, math.nan):>11.3f}" for x in layers)
            lines.append(f"{label:<24} {m['kept_total'] or 0:>6.3f}  {vals}")
        lines.append("")
    attn = sorted(next(iter(r["models"].values()))["attention_agreement"], key=_order)
    lines += ["attention agreement with the reference (1 - total variation)",
              f"{'model':<24} " + " ".join(f"{x.replace('_attn', ''):>16}" for x in attn)]
    for label, m in r["models"].items():
        lines.append(f"{label:<24} " + " ".join(f"{m['attention_agreement'][x]:>16.3f}" for x in attn))
    return "\n".join(lines)


def plot(r: dict, png: str) -> None:
    from .io import pyplot

    plt = pyplot()

    layers = sorted(next(iter(r["models"].values()))["cka_by_layer"], key=_order)
    attn = sorted(next(iter(r["models"].values()))["attention_agreement"], key=_order)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for label, m in r["models"].items():
        axes[0].plot(range(len(layers)), [m["kept_by_layer"].get(x, math.nan) for x in layers], marker="o",
                     label=label)
        axes[1].plot(range(len(layers)), [m["cka_by_layer"][x] for x in layers], marker="o", label=label)
        axes[2].plot(range(len(attn)), [m["attention_agreement"][x] for x in attn], marker="o", label=label)
    for ax, ticks, title in ((axes[0], layers, "kept fraction of the layer's weights"),
                             (axes[1], layers, "CKA of mean-pooled states to the reference"),
                             (axes[2], attn, "attention agreement with the reference")):
        ax.set_xticks(range(len(ticks)))
        ax.set_xticklabels([t.replace("coder.", "").replace("_attn", "") for t in ticks], rotation=60, fontsize=7)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, png)

