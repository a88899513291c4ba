"""The builders both families share, written once: fairseq's layers made supermasked in place, token tables, the
encoder/decoder mixin, the last steps of every build, and the shaped architectures.

Every builder is handed the model's `Supermask` (options.py) explicitly, as fairseq's linformer hands its shared
projection to its layers.
"""

import torch
from fairseq.logging import metrics
from fairseq.models import register_model_architecture
from torch import Tensor, nn

from ..init import generate_weight, role_of
from ..masks import cubic_schedule
from ..optim.masked_only import track_model
from ..supermask import (
    FrozenEmbedding,
    MaskedEmbedding,
    MaskedLinear,
    SupermaskModule,
    WeightBank,
    group_masks_,
    use_supermask_attention_,
)
from .options import Supermask


def supermask_(module: nn.Module, prefix: str, sm: Supermask, bank: WeightBank | None) -> None:
    """Replace, in place, every Linear of `module` by a MaskedLinear and every LayerNorm by one without affine
    parameters (nothing to learn there).

    `prefix` names the weights' random streams; with a bank, weights are shared by everything
    built with the same prefix (the one-layer variant).
    """
    for parent_name, parent in list(module.named_modules()):
        for attr, child in list(parent.named_children()):
            rel = f"{parent_name}.{attr}" if parent_name else attr
            if isinstance(child, nn.Linear):
                shape, name, spec = (child.out_features, child.in_features), f"{prefix}.{rel}", sm.init_specs[role_of(rel)]
                if bank is None:
                    kw = {"weight": generate_weight(sm.weight_seed, name, shape, spec)}
                else:
                    kw = {"shared": bank.get_or_add(rel, lambda n=name, s=shape, i=spec:
                                                    generate_weight(sm.weight_seed, n, s, i))}
                setattr(parent, attr, MaskedLinear(child.in_features, child.out_features, sm.rule, sm.score_init,
                                                   **kw))
            elif "LayerNorm" in type(child).__name__:
                setattr(parent, attr, nn.LayerNorm(child.normalized_shape, eps=child.eps, elementwise_affine=False))
    use_supermask_attention_(module)


class SupermaskStack:
    """What our encoders and decoders share: each layer fairseq builds is made supermasked as it is built (one
    random layer for every depth under --share-layer-weights). Set `self.supermask` before fairseq's __init__."""

    supermask: Supermask

    def _supermask_layer(self, layer: nn.Module, side: str) -> nn.Module:
        depth = self._depth = getattr(self, "_depth", -1) + 1
        bank = None
        if self.supermask.share_layer_weights:
            if not hasattr(self, "shared_layer_weights"):
                self.shared_layer_weights = WeightBank()
            bank = self.shared_layer_weights
        supermask_(layer, f"{side}.layer" if bank is not None else f"{side}.layers.{depth}", self.supermask, bank)
        return layer

    def _supermask_rest(self, side: str) -> None:
        for attr in ("layer_norm", "layernorm_embedding", "project_in_dim", "project_out_dim"):
            child = getattr(self, attr, None)
            if child is not None:
                holder = nn.Module()
                holder.add_module(attr, child)
                supermask_(holder, side, self.supermask, None)
                setattr(self, attr, getattr(holder, attr))


def token_embedding(sm: Supermask, dictionary, dim: int, side: str, pretrained: Tensor | None = None,
                    pretrained_mode: str = "frozen") -> nn.Module:
    """A masked random token table, or a pre-trained one: frozen, or masked like the rest (the authors' default)."""
    spec = sm.init_specs["embed"]
    if pretrained is not None and pretrained_mode == "masked":
        # the authors rescale by (1 - k)^-1/2 (the same at k = 0.5); sqrt(1/k) keeps the table's variance
        factor = spec.gain * (1 / spec.remaining_ratio if spec.scale else 1.0) ** 0.5
        return MaskedEmbedding(len(dictionary), dim, dictionary.pad(), sm.rule, sm.score_init,
                               weight=pretrained * factor, stored=True)
    if pretrained is not None:
        return FrozenEmbedding(pretrained, dictionary.pad())
    weight = generate_weight(sm.weight_seed, f"{side}.embed_tokens", (len(dictionary), dim), spec)
    weight[dictionary.pad()] = 0
    return MaskedEmbedding(len(dictionary), dim, dictionary.pad(), sm.rule, sm.score_init, weight=weight)


def masked_linear(sm: Supermask, name: str, fan_in: int, fan_out: int, role: str) -> MaskedLinear:
    """A masked linear of its own random weight (the stream `name`), outside the layers (heads, projections)."""
    weight = generate_weight(sm.weight_seed, name, (fan_out, fan_in), sm.init_specs[role])
    return MaskedLinear(fan_in, fan_out, sm.rule, sm.score_init, weight=weight)


def finish_(model: nn.Module, sm: Supermask) -> nn.Module:
    """The last steps of every build: the layers' score scale, batched mask selection, the optimizer's check."""
    scale_layer_scores_(model, sm.layer_score_lr_scale)
    group_masks_(model)
    track_model(model)
    return model


def scale_layer_scores_(model: nn.Module, s: float) -> None:
    """--layer-score-lr-scale s: the Transformer layers' scores start 1/s times larger. Adam's and SGD's steps do
    not depend on a parameter's size, and a mask only on its scores' order, so this trains those masks exactly as
    a learning rate s times --lr would (decoupled weight decay keeps --lr's rate), in every precision mode and
    under DDP, with no optimizer code."""
    if s == 1.0:
        return
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, SupermaskModule) and "layers" in name.split("."):
                m.scores.div_(s)


def anneal_(model: nn.Module, sm: Supermask, num_updates: int) -> None:
    """Under --ratio-anneal-updates: the k training masks use from this update on (eval keeps the target)."""
    if sm.ratio_anneal_updates:
        for m in model.modules():
            if isinstance(m, SupermaskModule):
                m.set_ratio(cubic_schedule(m.remaining_ratio, 0, sm.ratio_anneal_updates, num_updates))
        k = cubic_schedule(sm.rule.remaining_ratio, 0, sm.ratio_anneal_updates, num_updates)
        metrics.log_scalar("remaining_ratio", k, weight=0, priority=210, round=4)


def register_shaped_archs(model: str, stem: str, shapes: dict, sides: tuple[str, ...], base) -> None:
    """`{stem}_{suffix}` (a random layer per depth) and `one_layer_{stem}_{suffix}` for every shape
    (layers, embed dim, ffn dim, heads); flags the user gave win over the shape."""
    for suffix, (layers, dim, ffn, heads) in shapes.items():
        for one_layer in (False, True):
            def arch(args, values=(("layers", layers), ("embed_dim", dim), ("ffn_embed_dim", ffn),
                                   ("attention_heads", heads)), one_layer=one_layer):
                for side in sides:
                    for key, value in values:
                        if getattr(args, f"{side}_{key}", None) is None:
                            setattr(args, f"{side}_{key}", value)
                if one_layer:
                    args.share_layer_weights = True
                base(args)

            register_model_architecture(model, f"{'one_layer_' if one_layer else ''}{stem}_{suffix}")(arch)
