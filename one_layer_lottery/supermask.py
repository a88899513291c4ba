"""Supermask selection and the masked modules that use it.

A masked module holds a frozen random weight `W` (a buffer, never a parameter)
and a learnable `scores` tensor. Its effective weight is `W * TopK(|scores|)`.
In the one-layer variant several masked modules read the same `W` from a
`WeightBank` owned by the encoder or decoder: one storage, one state-dict entry.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from fairseq.modules.multihead_attention import MultiheadAttention
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from .init import check_remaining_ratio, init_scores_


def check_coat_ratios(coats, remaining_ratio: float) -> list[float]:
    """Inner coats of a multicoated mask: strictly decreasing, each in (0, remaining_ratio)."""
    out, outer = [], remaining_ratio
    for c in coats:
        c = float(c)
        if not (0 < c < outer):
            raise ValueError(f"coat ratio {c} must lie in (0, {outer}): each inner coat keeps fewer weights "
                             f"than the coat around it (the outermost is the remaining ratio {remaining_ratio})")
        out.append(c)
        outer = c
    return out


def coat_gain(remaining_ratio: float, coats: tuple[float, ...]) -> float:
    """The constant g that gives W * g * level the variance of a plain k-mask's W * M.

    A fraction k_c - k_(c+1) of the entries has level c + 1 (k_0 = k, k_(C+1) = 0), so
    E[level^2] = sum (k_c - k_(c+1)) (c + 1)^2 against k for a plain mask. Without it every inner coat
    makes the branches louder, and in this post-LayerNorm model a louder branch drowns the residual.
    """
    ks = (remaining_ratio, *coats, 0.0)
    second_moment = sum((ks[c] - ks[c + 1]) * (c + 1) ** 2 for c in range(len(ks) - 1))
    return (remaining_ratio / second_moment) ** 0.5


def n_pruned(numel: int, remaining_ratio: float) -> int:
    """How many entries a mask drops: the published rule int((1 - k) * n)."""
    return int((1 - remaining_ratio) * numel)


def linear(x: Tensor, weight: Tensor) -> Tensor:
    """F.linear through a 2-d view of x.

    torch's matmul takes a much slower path (about 10x) for a 3-d input with a transposed
    layout, such as fairseq's decoder output during incremental decoding, when the weight does
    not require grad, which is always the case for our cached inference weights.
    """
    return F.linear(x.reshape(-1, x.shape[-1]), weight).view(*x.shape[:-1], weight.shape[0])


def _kth_smallest(a: Tensor, j: int, sample: int = 8192) -> Tensor:
    """The j-th smallest entry of a 1-d tensor (1-based), exactly, without sorting it.

    A strided sample brackets the answer; only the entries inside the bracket go through
    kthvalue. Falls back to kthvalue on everything when the bracket misses (rare).
    """
    n = a.numel()
    if n <= 4 * sample:
        return a.kthvalue(j).values
    s = a[:: n // sample].sort().values
    m, q = s.numel(), j / n
    margin = 4.0 * (q * (1 - q) / m) ** 0.5 + 2.0 / m
    lo = s[max(0, int((q - margin) * m) - 1)]
    hi = s[min(m - 1, int((q + margin) * m))]
    below = int(torch.count_nonzero(a < lo))
    inside = a[(a >= lo) & (a <= hi)]
    r = j - below
    if 1 <= r <= inside.numel():
        return inside.kthvalue(r).values
    return a.kthvalue(j).values


@torch.no_grad()
def topk_mask(scores: Tensor, remaining_ratio: float) -> Tensor:
    """Boolean mask keeping the entries of largest |score|; exactly n - n_pruned of them."""
    return keep_largest(scores.detach().abs(), n_pruned(scores.numel(), remaining_ratio))


@torch.no_grad()
def keep_largest(a: Tensor, j: int) -> Tensor:
    """Boolean mask of a tensor of magnitudes that drops exactly its j smallest entries (ties: the
    lowest-index tied entries are kept). The one selection rule of supermasks and magnitude pruning."""
    n = a.numel()
    if j == 0:
        return torch.ones_like(a, dtype=torch.bool)
    shape, a = a.shape, a.flatten()
    if a.dtype in (torch.float16, torch.bfloat16) and a.device.type == "cpu":
        a = a.float()
    if a.device.type != "cpu":
        return _sorted_keep(a.unsqueeze(0), j)[0].view(shape)
    # a threshold, not a sort (O(n) instead of O(n log n))
    threshold = _kth_smallest(a, j)
    keep = a > threshold
    missing = (n - j) - int(torch.count_nonzero(keep))
    if missing:  # ties at the threshold: keep the lowest-index tied entries until the count is exact
        tie = a == threshold
        keep |= tie & (tie.cumsum(0) <= missing)
    return keep.view(shape)


def parse_structure(text) -> tuple[int, int] | None:
    """--mask-structure: None for unstructured, (N, M) for "N:M"; ValueError names what is allowed."""
    text = "unstructured" if text is None else str(text).strip()
    if text == "unstructured":
        return None
    n, sep, m = text.partition(":")
    try:
        n, m = int(n), int(m)
    except ValueError:
        n = m = 0
    if not sep or not 0 < n < m <= 16:
        raise ValueError(f"{text!r} is not a mask structure; allowed: unstructured or N:M with 0 < N < M <= 16 (e.g. 2:4)")
    return n, m


@torch.no_grad()
def nm_mask(scores: Tensor, n: int, m: int) -> Tensor:
    """N:M mask: in every group of m consecutive entries along the last dimension, keep the n of largest |score|.

    Ties keep the lowest-index entries (a stable sort), as the top-k rule does.
    """
    if scores.shape[-1] % m:
        raise ValueError(f"last dimension {scores.shape[-1]} is not a multiple of M = {m}")
    a = scores.detach().abs().reshape(-1, m)
    if a.dtype in (torch.float16, torch.bfloat16) and a.device.type == "cpu":
        a = a.float()
    keep = a.argsort(dim=1, descending=True, stable=True)[:, :n]
    return torch.zeros_like(a, dtype=torch.bool).scatter_(1, keep, True).view_as(scores)


def select_mask(scores: Tensor, remaining_ratio: float, structure: tuple[int, int] | None = None) -> Tensor:
    """The mask every masked module uses: top-k over the whole tensor, or N:M within groups."""
    if structure is None:
        return topk_mask(scores, remaining_ratio)
    return nm_mask(scores, *structure)


def _sorted_keep(a: Tensor, j: int) -> Tensor:
    """Row-wise keep-masks of a (rows, n) tensor of |scores|: drop the j smallest of each row.

    For accelerators: one stable sort, nothing that waits for the device (kthvalue on CUDA is
    one thread block per row, 10-100x slower). Stable and descending, so ties keep the
    lowest-index entries, exactly as the CPU rule does.
    """
    order = a.argsort(dim=1, descending=True, stable=True)[:, : a.shape[1] - j]
    return torch.zeros_like(a, dtype=torch.bool).scatter_(1, order, True)


_GROUP_NUMEL = 1 << 24  # entries sorted at once: bounds the sort's temporary memory


@torch.no_grad()
def select_group_masks(modules: list["SupermaskModule"]) -> list[Tensor]:
    """Masks of several same-shape, same-ratio modules in a few batched sorts (accelerators)."""
    m0 = modules[0]
    n = m0.scores.numel()
    j = n_pruned(n, m0.remaining_ratio)
    step = max(1, _GROUP_NUMEL // n)
    out = []
    for i in range(0, len(modules), step):
        chunk = modules[i:i + step]
        a = torch.stack([m.scores.detach().reshape(-1) for m in chunk]).abs_()
        keep = _sorted_keep(a, j) if j else torch.ones_like(a, dtype=torch.bool)
        out.extend(k.view_as(m.scores) for m, k in zip(chunk, keep))
    return out


def group_masks_(model: nn.Module) -> None:
    """Let masked modules of one shape and ratio select their masks together on accelerators.

    A one-layer model has many: every depth masks the same weight shapes. On CPU each module
    keeps selecting its own (the threshold rule there is already cheaper than a sort).
    """
    groups: dict[tuple, list[SupermaskModule]] = {}
    for m in model.modules():
        if isinstance(m, SupermaskModule):
            groups.setdefault((tuple(m.scores.shape), m.remaining_ratio), []).append(m)
    for members in groups.values():
        for m in members:
            m._group = tuple(members) if len(members) > 1 else None


# Optimizers change scores through .data, which bumps no version counter; every torch optimizer
# step (fairseq's optimizers are torch optimizers underneath) bumps this instead. Masks are then
# selected once per update, not once per micro-batch (--update-freq) or per forward.
_OPTIMIZER_STEPS = [0]


def _count_step(optimizer, args, kwargs) -> None:
    _OPTIMIZER_STEPS[0] += 1


register_optimizer_step_post_hook(_count_step)


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
    """Common part of masked modules: frozen weight (own or shared), scores, cached mask."""

    def __init__(self, shape: tuple[int, int], remaining_ratio: float, score_init: str,
                 weight: Tensor | None = None, shared: tuple[WeightBank, str] | None = None, stored: bool = False,
                 coat_ratios: tuple[float, ...] = (), structure: tuple[int, int] | None = None):
        super().__init__()
        self.remaining_ratio = check_remaining_ratio(remaining_ratio)
        self.structure = structure  # (N, M): an N:M mask (see nm_mask); None: top-k over the tensor
        if structure is not None and (coat_ratios or shape[-1] % structure[1]):
            raise ValueError(f"an N:M mask needs no coats and a last dimension divisible by M; got coats "
                             f"{tuple(coat_ratios)} and shape {tuple(shape)} for {structure[0]}:{structure[1]}")
        # multicoated supermask (Okoshi et al. 2022): inner top-k coats of the same scores, each adding W once more
        self.coat_ratios = tuple(check_coat_ratios(coat_ratios, remaining_ratio))
        self._annealed: float | None = None  # k while training under --ratio-anneal-updates (see set_ratio)
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

    def get_frozen_weight(self) -> Tensor:
        if self._shared is None:
            return self._buffers[self._weight_name]
        bank, key = self._shared
        return getattr(bank, key)

    def _mask_key(self) -> tuple:
        s = self.scores
        return (s._version, s.data_ptr(), s.dtype, _OPTIMIZER_STEPS[0], self.ratios())

    def set_ratio(self, k: float) -> None:
        """Keep k of the weights while training (annealing); evaluation and inference keep remaining_ratio."""
        self._annealed = None if k == self.remaining_ratio else float(check_remaining_ratio(k))

    def ratios(self) -> tuple[float, tuple[float, ...]]:
        """(k, inner coats' ratios) the mask uses now; inner coats shrink in proportion while annealing."""
        a = self._annealed
        if a is None or not self.training:
            return self.remaining_ratio, self.coat_ratios
        return a, tuple(c * a / self.remaining_ratio for c in self.coat_ratios)

    def mask(self) -> Tensor:
        """The current boolean mask (the outer coat), selected again only after the scores changed."""
        key = self._mask_key()
        if self._mask_cache is None or self._mask_cache[0] != key:
            group = self._group
            k = self.ratios()[0]
            if (group is not None and k == self.remaining_ratio and self.structure is None
                    and self.scores.device.type != "cpu" and all(m.scores.device == self.scores.device for m in group)):
                for m, mask in zip(group, select_group_masks(list(group))):
                    m._mask_cache = (m._mask_key(), mask)
            else:
                self._mask_cache = (key, select_mask(self.scores, k, self.structure))
        return self._mask_cache[1]

    def coat_masks(self) -> list[Tensor]:
        """The inner coats' boolean masks (nested in the outer one); empty for a plain supermask."""
        return [topk_mask(self.scores, k) for k in self.ratios()[1]]

    def levels(self) -> Tensor:
        """The mask the weight is multiplied by: boolean, or for multicoated masks g * (0, 1, ..., coats + 1)."""
        mask = self.mask()
        if not self.coat_ratios:
            return mask
        key = self._mask_key()  # like the outer mask: selected once per update, not once per forward
        if self._levels_cache is None or self._levels_cache[0] != key:
            level = mask.float()
            for inner in self.coat_masks():
                level += inner
            self._levels_cache = (key, level * coat_gain(*self.ratios()))
        return self._levels_cache[1]

    def masked_weight(self) -> Tensor:
        w = self.get_frozen_weight()
        if torch.is_grad_enabled() and self.scores.requires_grad:
            return _MaskedWeight.apply(self.scores, w, self.levels())
        # inference: materialise W * M once, reuse it until scores, weights or mode change
        key = (self.scores._version, self.scores.data_ptr(), w._version, w.data_ptr(), w.dtype, w.device,
               _OPTIMIZER_STEPS[0], self.ratios())
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

    def __init__(self, in_features: int, out_features: int, remaining_ratio: float,
                 score_init: str = "kaiming_uniform", weight: Tensor | None = None,
                 shared: tuple[WeightBank, str] | None = None, coat_ratios: tuple[float, ...] = (),
                 structure: tuple[int, int] | None = None):
        super().__init__((out_features, in_features), remaining_ratio, score_init, weight, shared,
                         coat_ratios=coat_ratios, structure=structure)
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

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int, remaining_ratio: float,
                 score_init: str = "kaiming_uniform", weight: Tensor | None = None, stored: bool = False,
                 coat_ratios: tuple[float, ...] = (), structure: tuple[int, int] | None = None):
        super().__init__((num_embeddings, embedding_dim), remaining_ratio, score_init, weight, stored=stored,
                         coat_ratios=coat_ratios, structure=structure)
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
