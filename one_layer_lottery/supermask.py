"""The masked modules: a frozen random weight, learned scores and one mask rule (masks.py).

A masked module holds a frozen random weight `W` (a buffer, never a parameter)
and a learnable `scores` tensor. Its effective weight is `W * M`, M the mask its rule selects from the
scores (for the paper's rule, `TopK(|scores|)`).
In the one-layer variant several masked modules read the same `W` from a
`WeightBank` owned by the encoder or decoder: one storage, one state-dict entry.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from fairseq.modules.multihead_attention import MultiheadAttention
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from .init import init_scores_
from .masks import TopK, check_remaining_ratio, n_pruned, sorted_keep


def linear(x: Tensor, weight: Tensor) -> Tensor:
    """F.linear through a 2-d view of x.

    torch's matmul takes a much slower path (about 10x) for a 3-d input with a transposed
    layout, such as fairseq's decoder output during incremental decoding, when the weight does
    not require grad, which is always the case for our cached inference weights.
    """
    return F.linear(x.reshape(-1, x.shape[-1]), weight).view(*x.shape[:-1], weight.shape[0])


_GROUP_NUMEL = 1 << 24  # entries sorted at once: bounds the sort's temporary memory


@torch.no_grad()
def select_group_masks(modules: list["SupermaskModule"]) -> list[Tensor]:
    """Masks of several same-shape, same-ratio modules in a few batched sorts (accelerators)."""
    m0 = modules[0]
    n = m0.scores.numel()
    j = n_pruned(n, m0.rule.remaining_ratio)
    step = max(1, _GROUP_NUMEL // n)
    out = []
    for i in range(0, len(modules), step):
        chunk = modules[i:i + step]
        a = torch.stack([m.scores.detach().reshape(-1) for m in chunk]).abs_()
        keep = sorted_keep(a, j) if j else torch.ones_like(a, dtype=torch.bool)
        out.extend(k.view_as(m.scores) for m, k in zip(chunk, keep))
    return out


def group_masks_(model: nn.Module) -> None:
    """Let masked modules of one shape and rule select their masks together on accelerators.

    A one-layer model has many: every depth masks the same weight shapes. On CPU each module
    keeps selecting its own (the threshold rule there is already cheaper than a sort).
    """
    groups: dict[tuple, list[SupermaskModule]] = {}
    for m in model.modules():
        if isinstance(m, SupermaskModule):
            groups.setdefault((tuple(m.scores.shape), m.rule), []).append(m)
    for members in groups.values():
        for m in members:
            m._group = tuple(members) if len(members) > 1 else None


# Optimizers change scores through .data, which bumps no version counter; every torch optimizer
# step (fairseq's optimizers are torch optimizers underneath) bumps this instead. Masks are then
# selected once per update, not once per micro-batch (--update-freq) or per forward.
_OPTIMIZER_STEPS = [0]
_STEP_HOOK = []  # registered when the first masked module is built, not at import


def _count_step(optimizer, args, kwargs) -> None:
    _OPTIMIZER_STEPS[0] += 1


def count_optimizer_steps() -> None:
    if not _STEP_HOOK:
        _STEP_HOOK.append(register_optimizer_step_post_hook(_count_step))


def _apply_mask(weight: Tensor, mask: Tensor) -> Tensor:
    """W * M for a boolean mask, or for a multicoated one (how many nested coats keep each entry)."""
    if mask.dtype == torch.bool:
        return torch.where(mask, weight, weight.new_zeros(()))
    return weight * mask.to(weight.dtype)


class _MaskedWeight(torch.autograd.Function):
    """W * M forward; straight-through backward: TopK is the identity, so dL/d|S| = dL/dW_eff * W."""

    @staticmethod
    def forward(ctx, scores: Tensor, weight: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(scores, weight)
        return _apply_mask(weight, mask)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        scores, weight = ctx.saved_tensors
        # the mask ranks |S|, so the chain rule through abs() carries sign(S), as in edge-popup
        out = grad * weight
        return out.mul_(scores.sign()), None, None


class WeightBank(nn.Module):
    """Frozen random weights shared by several masked modules (the one-layer variant)."""

    def get_or_add(self, name: str, make: Callable[[], Tensor]) -> tuple["WeightBank", str]:
        key = name.replace(".", "__")
        if not hasattr(self, key):
            self.register_buffer(key, make())
        return self, key


class SupermaskModule(nn.Module):
    """Common part of masked modules: frozen weight (own or shared), scores, one mask rule, cached mask."""

    def __init__(self, shape: tuple[int, int], rule: TopK | float, score_init: str,
                 weight: Tensor | None = None, shared: tuple[WeightBank, str] | None = None, stored: bool = False):
        super().__init__()
        count_optimizer_steps()
        self.rule = rule if isinstance(rule, TopK) else TopK(check_remaining_ratio(rule))  # a float: plain top-k
        self.rule.check_shape(shape)
        self._annealed: TopK | None = None  # the rule while training under --ratio-anneal-updates (see set_ratio)
        if (weight is None) == (shared is None):
            raise ValueError("give exactly one of weight and shared")
        w = weight if weight is not None else getattr(*shared)
        self.scores = nn.Parameter(init_scores_(torch.empty(shape), score_init, w))
        # frozen_weight: regenerated from the seed; stored_weight: not (a pre-trained table), so artifacts store it
        self._weight_name = "stored_weight" if stored else "frozen_weight"
        if weight is not None:
            self.register_buffer(self._weight_name, weight)
        # a plain tuple: the bank is registered once, on its owner, not on every user
        self._shared = shared
        self._cache: tuple[tuple, Tensor] | None = None
        self._mask_cache: tuple[tuple, Tensor] | None = None
        self._levels_cache: tuple[tuple, Tensor] | None = None  # multicoated masks only, same key
        self._group: tuple[SupermaskModule, ...] | None = None  # see group_masks_

    @property
    def remaining_ratio(self) -> float:
        return self.rule.remaining_ratio

    def get_frozen_weight(self) -> Tensor:
        if self._shared is None:
            return self._buffers[self._weight_name]
        bank, key = self._shared
        return getattr(bank, key)

    def _mask_key(self) -> tuple:
        s = self.scores
        return (s._version, s.data_ptr(), s.dtype, _OPTIMIZER_STEPS[0], self.current_rule())

    def set_ratio(self, k: float) -> None:
        """Keep k of the weights while training (annealing); evaluation and inference keep remaining_ratio."""
        self._annealed = None if k == self.remaining_ratio else self.rule.at(check_remaining_ratio(k))

    def current_rule(self) -> TopK:
        """The rule the mask follows now: the annealed one while training, else the module's own."""
        return self._annealed if self._annealed is not None and self.training else self.rule

    def mask(self) -> Tensor:
        """The current boolean mask (the outer coat), selected again only after the scores changed."""
        key = self._mask_key()
        if self._mask_cache is None or self._mask_cache[0] != key:
            group, rule = self._group, self.current_rule()
            if (group is not None and rule is self.rule and rule.groupable and self.scores.device.type != "cpu"
                    and all(m.scores.device == self.scores.device for m in group)):
                for m, mask in zip(group, select_group_masks(list(group))):
                    m._mask_cache = (m._mask_key(), mask)
            else:
                self._mask_cache = (key, rule.select(self.scores))
        return self._mask_cache[1]

    def coat_masks(self) -> list[Tensor]:
        """The inner coats' boolean masks (nested in the outer one); empty for a plain supermask."""
        return self.current_rule().planes(self.scores, self.mask())[1:]

    def levels(self) -> Tensor:
        """The mask the weight is multiplied by: boolean, or for multicoated masks g * (0, 1, ..., coats + 1)."""
        mask, rule = self.mask(), self.current_rule()
        if not rule.coats:
            return mask
        key = self._mask_key()  # like the outer mask: selected once per update, not once per forward
        if self._levels_cache is None or self._levels_cache[0] != key:
            self._levels_cache = (key, rule.levels(self.scores, mask))
        return self._levels_cache[1]

    def masked_weight(self) -> Tensor:
        w = self.get_frozen_weight()
        if torch.is_grad_enabled() and self.scores.requires_grad:
            return _MaskedWeight.apply(self.scores, w, self.levels())
        # inference: materialise W * M once, reuse it until scores, weights or mode change
        key = (self.scores._version, self.scores.data_ptr(), w._version, w.data_ptr(), w.dtype, w.device,
               _OPTIMIZER_STEPS[0], self.current_rule())
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, _apply_mask(w, self.levels()))
        return self._cache[1]

    def train(self, mode: bool = True):
        # scores may be edited through .data (no version bump) outside an optimizer step: forget the
        # caches when training starts; eval() keeps them (fairseq's generator calls it on every batch)
        if mode:
            self._cache = self._mask_cache = self._levels_cache = None
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        self._cache = self._mask_cache = self._levels_cache = None
        return super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, *args, **kwargs):
        # scores stay fp32 through .half() / .to(bfloat16) (fairseq's --fp16/--bf16, fairseq-generate
        # --fp16): rounded scores would tie and select another mask than the one trained
        self._cache = self._mask_cache = self._levels_cache = None
        before = self.scores.data
        out = super()._apply(fn, *args, **kwargs)
        if self.scores.dtype != before.dtype:
            grad, self.scores.grad = self.scores.grad, None
            self.scores.data = before.to(self.scores.device)
            if grad is not None:
                self.scores.grad = grad.to(before.dtype)
        return out


class MaskedLinear(SupermaskModule):
    """y = x (W * M)^T, no bias. `.weight` is the masked weight, so fairseq code reading it works."""

    bias = None

    def __init__(self, in_features: int, out_features: int, rule: TopK | float,
                 score_init: str = "kaiming_uniform", weight: Tensor | None = None,
                 shared: tuple[WeightBank, str] | None = None):
        super().__init__((out_features, in_features), rule, score_init, weight, shared)
        self.in_features, self.out_features = in_features, out_features

    _inference_weight: Tensor | None = None  # another storage of W * M for inference (semi_structured.sparsify_)

    @property
    def weight(self) -> Tensor:
        return self.masked_weight()

    def set_inference_weight(self, weight: Tensor | None) -> None:
        """Use `weight` (W * M in another storage, e.g. 2:4 sparse) for inference until training resumes."""
        self._inference_weight = weight
        self._cache = None  # the dense copy is rebuilt only if something still reads `.weight`

    def forward(self, x: Tensor) -> Tensor:
        w = self._inference_weight
        if w is not None and not self.training and not torch.is_grad_enabled():
            return linear(x, w)
        return linear(x, self.masked_weight())

    def train(self, mode: bool = True):
        if mode:
            self._inference_weight = None
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self._inference_weight = None
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self._inference_weight = None
        return super()._load_from_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, remaining_ratio={self.remaining_ratio}"


class MaskedEmbedding(SupermaskModule):
    """A token embedding whose table is W * M (padding row of W is zero)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int, rule: TopK | float,
                 score_init: str = "kaiming_uniform", weight: Tensor | None = None, stored: bool = False):
        super().__init__((num_embeddings, embedding_dim), rule, score_init, weight, stored=stored)
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx

    @property
    def weight(self) -> Tensor:
        return self.masked_weight()

    def forward(self, tokens: Tensor) -> Tensor:
        return F.embedding(tokens, self.masked_weight(), self.padding_idx)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, padding_idx={self.padding_idx}, remaining_ratio={self.remaining_ratio}"


class FrozenEmbedding(nn.Module):
    """A pre-trained embedding table, frozen (a buffer) and not masked."""

    def __init__(self, weight: Tensor, padding_idx: int):
        super().__init__()
        self.register_buffer("weight", weight)
        self.num_embeddings, self.embedding_dim = weight.shape
        self.padding_idx = padding_idx

    def forward(self, tokens: Tensor) -> Tensor:
        return F.embedding(tokens, self.weight, self.padding_idx)


class TiedOutputProjection(nn.Module):
    """Output projection that reuses the decoder's (masked or frozen) embedding table."""

    def __init__(self, embedding: nn.Module):
        super().__init__()
        self._embedding = (embedding,)  # not a submodule: the decoder owns it

    @property
    def weight(self) -> Tensor:
        return self._embedding[0].weight

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight)


def supermask_modules(model: nn.Module):
    """(name, module) for every masked module of a model."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, SupermaskModule)]



class SupermaskMultiheadAttention(MultiheadAttention):
    """fairseq's attention whose fused path works with bias-free masked projections.

    fairseq's fused call concatenates the q/k/v biases; ours have none, so we make the same
    call with no biases (and, for self-attention, one packed projection); every other case
    (incremental decoding, static keys) is fairseq's own code, reading our masked `.weight`s.
    """

    def forward(self, query, key, value, key_padding_mask=None, incremental_state=None, need_weights=True,
                static_kv=False, attn_mask=None, before_softmax=False, need_head_weights=False):
        if (incremental_state is not None or static_kv or self.onnx_trace or query.device.type == "xla"
                or before_softmax or torch.jit.is_scripting() or self.bias_k is not None):
            return super().forward(query, key, value, key_padding_mask, incremental_state, need_weights,
                                   static_kv, attn_mask, before_softmax, need_head_weights)
        need_weights = need_weights or need_head_weights
        if not need_weights and any(getattr(p, "_inference_weight", None) is not None
                                    for p in (self.q_proj, self.k_proj, self.v_proj, self.out_proj)):
            return self._projected_forward(query, key, value, key_padding_mask, attn_mask), None
        packed = key is query and value is query
        q, k, v = self.q_proj.weight, self.k_proj.weight, self.v_proj.weight
        return F.multi_head_attention_forward(
            query, key, value, self.embed_dim, self.num_heads,
            torch.cat((q, k, v)) if packed else torch.empty([0]), None, None, None, self.add_zero_attn,
            self.dropout_module.p, self.out_proj.weight, None,
            self.training or self.dropout_module.apply_during_inference,
            key_padding_mask.bool() if key_padding_mask is not None else None, need_weights, attn_mask,
            use_separate_proj_weight=not packed, q_proj_weight=q, k_proj_weight=k, v_proj_weight=v,
            average_attn_weights=not need_head_weights)

    def _projected_forward(self, query, key, value, key_padding_mask, attn_mask):
        """Attention through the projection modules' own forward (their inference weights, e.g. 2:4 sparse)
        instead of the fused call, which needs dense weights. Inference only (no dropout)."""
        tgt, bsz, dim = query.shape

        def heads(x: Tensor) -> Tensor:  # (time, batch, dim) -> (batch, heads, time, head_dim)
            return x.reshape(x.shape[0], bsz, self.num_heads, self.head_dim).permute(1, 2, 0, 3)

        q, k, v = heads(self.q_proj(query)), heads(self.k_proj(key)), heads(self.v_proj(value))
        mask = None
        if attn_mask is not None:
            mask = attn_mask.to(q.dtype) if attn_mask.dtype != torch.bool else torch.zeros(
                attn_mask.shape, dtype=q.dtype, device=q.device).masked_fill(attn_mask, float("-inf"))
        if key_padding_mask is not None:
            pad = torch.zeros(key_padding_mask.shape, dtype=q.dtype, device=q.device).masked_fill(
                key_padding_mask.bool(), float("-inf"))[:, None, None, :]
            mask = pad if mask is None else mask + pad
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(out.permute(2, 0, 1, 3).reshape(tgt, bsz, dim))


def use_supermask_attention_(module: nn.Module) -> None:
    """Give every fairseq attention in `module` the bias-free fused path (swaps the class in place:
    fairseq builds the attention inside its layer constructors, which we do not copy)."""
    for m in module.modules():
        if type(m) is MultiheadAttention:
            m.__class__ = SupermaskMultiheadAttention
