"""Mask rules: how a supermask is chosen from its scores.

A rule is a small immutable object, as a pruning method is in torch's `nn.utils.prune`: it selects a mask
from scores, checks a weight shape, says what the mask costs in bits and packs it for the artifact. A masked
module holds one rule; annealing asks the rule for its version at another k. Every rule keeps exactly the count
it promises, ties going to the lowest index.

    TopK(k)                  the k fraction of largest |score| over the whole tensor (the paper's rule)
    NM(n, m)                 n of every m consecutive weights along the input dimension (2:4 sparse tensor cores)
    RowTopK(k)               the k fraction of largest |score| in every output row
    Multicoat(k, coats)      nested top-k coats of the same scores (Okoshi et al. 2022); each inner coat stored
                             only where the coat around it keeps (1 + k + the coats but the last, bits a weight)
A new rule is one class here (select, and what differs from TopK) and one entry in STRUCTURES.
"""

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def check_remaining_ratio(k: float) -> float:
    if not (isinstance(k, (int, float)) and 0.0 < k <= 1.0):
        raise ValueError(f"remaining ratio {k!r} is outside (0, 1]: it is the fraction of weights kept")
    return float(k)


def cubic_schedule(remaining_ratio: float, start: int, end: int, num_updates: int) -> float:
    """The fraction kept at an update on Zhu & Gupta's (2017) cubic ramp from 1 at `start` to `remaining_ratio` at
    `end`: k + (1 - k) (1 - p)^3, p the fraction of the ramp done. Annealed supermasks (start 0) and magnitude
    pruning both use it."""
    if num_updates < start:
        return 1.0
    if num_updates >= end:
        return remaining_ratio
    done = (num_updates - start) / (end - start)
    return remaining_ratio + (1 - remaining_ratio) * (1 - done) ** 3


def n_pruned(numel: int, remaining_ratio: float) -> int:
    """How many entries a mask drops: the published rule int((1 - k) * n)."""
    return int((1 - remaining_ratio) * numel)


# ---- selection algorithms --------------------------------------------------------------------

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


def sorted_keep(a: Tensor, j: int) -> Tensor:
    """Row-wise keep-masks of a (rows, n) tensor of magnitudes: drop the j smallest of each row.

    For accelerators: one stable sort, nothing that waits for the device (kthvalue on CUDA is
    one thread block per row, 10-100x slower). Stable and descending, so ties keep the
    lowest-index entries, exactly as the CPU rule does.
    """
    order = a.argsort(dim=1, descending=True, stable=True)[:, : a.shape[1] - j]
    return torch.zeros_like(a, dtype=torch.bool).scatter_(1, order, True)


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
        return sorted_keep(a.unsqueeze(0), j)[0].view(shape)
    # a threshold, not a sort (O(n) instead of O(n log n))
    threshold = _kth_smallest(a, j)
    keep = a > threshold
    missing = (n - j) - int(torch.count_nonzero(keep))
    if missing:  # ties at the threshold: keep the lowest-index tied entries until the count is exact
        tie = a == threshold
        keep |= tie & (tie.cumsum(0) <= missing)
    return keep.view(shape)


@torch.no_grad()
def topk_mask(scores: Tensor, remaining_ratio: float) -> Tensor:
    """Boolean mask keeping the entries of largest |score|; exactly n - n_pruned of them."""
    return keep_largest(scores.detach().abs(), n_pruned(scores.numel(), remaining_ratio))


@torch.no_grad()
def nm_mask(scores: Tensor, n: int, m: int) -> Tensor:
    """N:M mask: in every group of m consecutive entries along the last dimension, keep the n of largest |score|.

    Ties keep the lowest-index entries (a stable sort), as the top-k rule does.
    """
    if scores.shape[-1] % m:
        raise ValueError(f"last dimension {scores.shape[-1]} is not a multiple of M = {m}")
    return _groups_keep(scores.detach().abs().reshape(-1, m), m - n).view_as(scores)


def _groups_keep(a: Tensor, j: int) -> Tensor:
    """Drop the j smallest of every row of a (rows, n) tensor of magnitudes (a stable sort: ties keep low indices)."""
    if a.dtype in (torch.float16, torch.bfloat16) and a.device.type == "cpu":
        a = a.float()
    return sorted_keep(a, j) if j else torch.ones_like(a, dtype=torch.bool)


def coat_gain(remaining_ratio: float, coats: tuple[float, ...]) -> float:
    """The constant g that gives W * g * level the variance of a plain k-mask's W * M.

    A fraction k_c - k_(c+1) of the entries has level c + 1 (k_0 = k, k_(C+1) = 0), so
    E[level^2] = sum (k_c - k_(c+1)) (c + 1)^2 against k for a plain mask. Without it every inner coat
    makes the branches louder, and in this post-LayerNorm model a louder branch drowns the residual.
    """
    ks = (remaining_ratio, *coats, 0.0)
    second_moment = sum((ks[c] - ks[c + 1]) * (c + 1) ** 2 for c in range(len(ks) - 1))
    return (remaining_ratio / second_moment) ** 0.5


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


# ---- packing for the artifact ----------------------------------------------------------------

def pack_bits(mask: Tensor) -> Tensor:
    return torch.from_numpy(np.packbits(mask.flatten().numpy()))


def unpack_bits(data: Tensor, numel: int) -> np.ndarray:
    return np.unpackbits(data.numpy(), count=numel).astype(bool)


def _nm_codec(n: int, m: int) -> tuple[np.ndarray, int, int]:
    """(pattern index of every m-bit group code, -1 where not an N:M pattern; patterns; groups per byte, 0 if
    one pattern index does not fit a byte)."""
    patterns = list(itertools.combinations(range(m), n))
    lut = np.full(1 << m, -1, dtype=np.int64)
    for i, p in enumerate(patterns):
        lut[sum(1 << j for j in p)] = i
    per_byte = max((g for g in range(1, 9) if len(patterns) ** g <= 256), default=0)
    return lut, len(patterns), per_byte


def nm_bits_per_weight(n: int, m: int) -> float:
    """What an N:M mask costs packed as pattern indices (2:4: 6 patterns, 3 groups a byte, 2/3 bit a weight)."""
    per_byte = _nm_codec(n, m)[2]
    return 8 / (per_byte * m) if per_byte else math.inf


def pack_nm(mask: np.ndarray, n: int, m: int) -> np.ndarray:
    """An N:M boolean mask as base-C digits (C patterns per group) packed into bytes."""
    lut, c, per_byte = _nm_codec(n, m)
    idx = lut[mask.reshape(-1, m).astype(np.int64) @ (1 << np.arange(m))]
    if (idx < 0).any():
        raise ValueError(f"the mask is not {n}:{m}")
    idx = np.concatenate([idx, np.zeros(-len(idx) % per_byte, dtype=np.int64)]).reshape(-1, per_byte)
    return (idx @ (c ** np.arange(per_byte))).astype(np.uint8)


def unpack_nm(data: np.ndarray, numel: int, n: int, m: int) -> np.ndarray:
    lut, c, per_byte = _nm_codec(n, m)
    codes = np.flatnonzero(lut >= 0)[np.argsort(lut[lut >= 0])]  # pattern index -> group bits
    idx = (data.astype(np.int64)[:, None] // (c ** np.arange(per_byte))) % c
    bits = (codes[idx.reshape(-1)[: numel // m]][:, None] >> np.arange(m)) & 1
    return bits.reshape(-1).astype(bool)


# ---- the rules ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class TopK:
    """The k fraction of largest |score| over the whole tensor: exactly n - int((1 - k) n) entries."""

    remaining_ratio: float
    coats = ()  # inner coats of a multicoated mask (none here)
    groupable = True  # same-shape modules may select together in one batched sort (accelerators)

    def __post_init__(self):
        check_remaining_ratio(self.remaining_ratio)

    def __str__(self) -> str:
        return f"top-k at k = {self.remaining_ratio}"

    @property
    def bits_per_weight(self) -> float:
        return 1.0 + len(self.coats)

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Raise ValueError when a weight of this shape cannot take the rule."""

    def at(self, k: float) -> "TopK":
        """The rule keeping k instead (annealing k from 1 down to the remaining ratio)."""
        return self if k == self.remaining_ratio else type(self)(k)

    def select(self, scores: Tensor) -> Tensor:
        """The boolean mask (the outer coat of a multicoated mask)."""
        return topk_mask(scores, self.remaining_ratio)

    def levels(self, scores: Tensor, mask: Tensor) -> Tensor:
        """What the frozen weight is multiplied by, given the selected mask: the mask itself here."""
        return mask

    def planes(self, scores: Tensor, mask: Tensor) -> list[Tensor]:
        """The boolean planes of the mask, full size: the mask, then any inner coats (`pack` stores them)."""
        return [mask]

    def pack(self, name: str, scores: Tensor, mask: Tensor) -> tuple[dict[str, Tensor], dict]:
        """(artifact tensors, metadata entries) of one module's mask."""
        planes = self.planes(scores, mask)
        tensors = {(f"mask:{name}" if i == 0 else f"coat{i}:{name}"): pack_bits(p) for i, p in enumerate(planes)}
        return tensors, ({"coats": {name: len(planes) - 1}} if len(planes) > 1 else {})


@dataclass(frozen=True)
class RowTopK(TopK):
    """The k fraction of largest |score| in every output row (each row drops exactly int((1 - k) x columns) entries)."""

    groupable = False

    def __str__(self) -> str:
        return f"row-wise top-k at k = {self.remaining_ratio}"

    def check_shape(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 2:
            raise ValueError(f"a row-wise mask needs a 2-d weight; got shape {tuple(shape)}")

    def select(self, scores: Tensor) -> Tensor:
        a = scores.detach().abs()
        return _groups_keep(a.reshape(a.shape[0], -1), n_pruned(a[0].numel(), self.remaining_ratio)).view_as(a)


@dataclass(frozen=True)
class NM(TopK):
    """n of every m consecutive weights along the last (input) dimension; k = n / m."""

    remaining_ratio: float = 0.5  # n / m, set from them
    n: int = 2
    m: int = 4
    groupable = False

    def __post_init__(self):
        if not 0 < self.n < self.m <= 16:
            raise ValueError(f"'{self.n}:{self.m}' is not a mask structure; allowed: N:M with 0 < N < M <= 16")
        object.__setattr__(self, "remaining_ratio", self.n / self.m)

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def bits_per_weight(self) -> float:
        return min(1.0, nm_bits_per_weight(self.n, self.m))

    def check_shape(self, shape: tuple[int, ...]) -> None:
        if shape[-1] % self.m:
            raise ValueError(f"an N:M mask needs a last dimension divisible by M; got shape {tuple(shape)} for "
                             f"{self.n}:{self.m}")

    def at(self, k: float) -> "NM":
        if k != self.remaining_ratio:
            raise ValueError(f"an {self} mask keeps exactly {self.n} of every {self.m} weights; it cannot keep {k}")
        return self

    def select(self, scores: Tensor) -> Tensor:
        return nm_mask(scores, self.n, self.m)

    def pack(self, name: str, scores: Tensor, mask: Tensor) -> tuple[dict[str, Tensor], dict]:
        if nm_bits_per_weight(self.n, self.m) >= 1:  # a bitmap is no larger than pattern indices
            return super().pack(name, scores, mask)
        packed = pack_nm(mask.flatten().numpy(), self.n, self.m)
        return {f"nm:{name}": torch.from_numpy(packed)}, {"nm": {name: [self.n, self.m]}}


@dataclass(frozen=True)
class Multicoat(TopK):
    """Nested top-k coats of one score tensor; a weight counts once per coat that keeps it, times coat_gain."""

    coats: tuple[float, ...] = ()

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "coats", tuple(check_coat_ratios(self.coats, self.remaining_ratio)))
        if not self.coats:
            raise ValueError("a multicoated mask needs at least one inner coat")

    def __str__(self) -> str:
        return f"top-k at k = {self.remaining_ratio} with inner coats {', '.join(map(str, self.coats))}"

    def at(self, k: float) -> "Multicoat":
        """Inner coats shrink in proportion."""
        if k == self.remaining_ratio:
            return self
        return Multicoat(k, tuple(c * k / self.remaining_ratio for c in self.coats))

    def planes(self, scores: Tensor, mask: Tensor) -> list[Tensor]:
        return [mask, *(topk_mask(scores, c) for c in self.coats)]

    @property
    def bits_per_weight(self) -> float:
        """A bit a weight for the mask, then each inner coat a bit where the coat around it keeps."""
        return 1.0 + self.remaining_ratio + sum(self.coats[:-1])

    def levels(self, scores: Tensor, mask: Tensor) -> Tensor:
        level = mask.float()
        for inner in self.planes(scores, mask)[1:]:
            level += inner
        return level * coat_gain(self.remaining_ratio, self.coats)

    def pack(self, name: str, scores: Tensor, mask: Tensor) -> tuple[dict[str, Tensor], dict]:
        """The mask a bit a weight; each inner coat a bit for every entry the coat around it keeps (they nest, so
        elsewhere it is 0): 1.5 bits a weight, not 2, for one inner coat at half of k = 0.5. `nested_coats` says
        so; a plane's length is what the plane before it keeps."""
        planes = [p.flatten() for p in self.planes(scores, mask)]
        tensors = {f"mask:{name}": pack_bits(planes[0])}
        for i in range(1, len(planes)):
            tensors[f"coat{i}:{name}"] = pack_bits(planes[i][planes[i - 1]])
        return tensors, {"coats": {name: len(planes) - 1}, "nested_coats": True}


def unpack_levels(meta: dict, tensors: dict, name: str, numel: int) -> np.ndarray:
    """How many stored coats keep each entry (0/1 for a plain mask), flat float32: scores that select exactly the
    packed masks (top-k of |levels| at every coat's ratio is that coat). Nested coats (format 5) are spread back
    over the entries of the coat around them."""
    outer = outer_mask(meta, tensors, name, numel)
    levels = outer.astype(np.float32)
    for i in range(1, 1 + int(meta.get("coats", {}).get(name, 0))):
        if not meta.get("nested_coats"):  # formats 3 and 4: every coat a full plane
            levels += unpack_bits(tensors[f"coat{i}:{name}"], numel)
            continue
        inner = np.zeros(numel, dtype=bool)
        inner[outer] = unpack_bits(tensors[f"coat{i}:{name}"], int(outer.sum()))
        levels += inner
        outer = inner
    return levels


def outer_mask(meta: dict, tensors: dict, name: str, numel: int) -> np.ndarray:
    """The (outer) boolean mask of one module, flat, as the artifact stores it."""
    if name in meta.get("nm", {}):
        n, m = meta["nm"][name]
        return unpack_nm(tensors[f"nm:{name}"].numpy(), numel, n, m)
    return unpack_bits(tensors[f"mask:{name}"], numel)


def packed_sizes(meta: dict, name: str, numel: int, tensors: dict) -> dict[str, int]:
    """{artifact tensor: bytes} a module's packed mask must have, in order; KeyError names a plane that is missing
    where a later one's size depends on it (nested coats)."""
    if name in meta.get("nm", {}):
        n, m = meta["nm"][name]
        return {f"nm:{name}": math.ceil(numel // m / _nm_codec(n, m)[2])}
    return {key: math.ceil(bits / 8) for key, bits in _plane_bits(meta, name, numel, tensors).items()}


def _plane_bits(meta: dict, name: str, numel: int, tensors: dict) -> dict[str, int]:
    """{artifact tensor: bits} of a module's bit planes: the mask a bit a weight, then each inner coat a bit a
    weight (formats 3 and 4) or, nested (format 5), a bit for each entry the plane before it keeps."""
    out, key = {f"mask:{name}": numel}, f"mask:{name}"
    for i in range(1, 1 + int(meta.get("coats", {}).get(name, 0))):
        bits = int(unpack_bits(tensors[key], out[key]).sum()) if meta.get("nested_coats") else numel
        key = f"coat{i}:{name}"
        out[key] = bits
    return out


def packed_bits(meta: dict, name: str, numel: int, tensors: dict) -> int:
    """The bits a module's mask takes in an artifact (what export counts): its bit planes' bits (the mask, then
    the coats), or the bytes of its N:M pattern indices."""
    if name in meta.get("nm", {}):
        return 8 * sum(packed_sizes(meta, name, numel, tensors).values())
    return sum(_plane_bits(meta, name, numel, tensors).values())


# ---- from options ------------------------------------------------------------------------------

STRUCTURES = {"unstructured": TopK, "row": RowTopK}  # --mask-structure names; "N:M" makes an NM rule


def parse_structure(text) -> tuple[int, int] | str:
    """--mask-structure: a name of STRUCTURES, or (N, M) for "N:M"; ValueError names what is allowed."""
    text = "unstructured" if text is None else str(text).strip()
    if text in STRUCTURES:
        return text
    n, sep, m = text.partition(":")
    try:
        n, m = int(n), int(m)
    except ValueError:
        n = m = 0
    if not sep or not 0 < n < m <= 16:
        raise ValueError(f"{text!r} is not a mask structure; allowed: {', '.join(STRUCTURES)} or N:M with "
                         f"0 < N < M <= 16 (e.g. 2:4)")
    return n, m


def make_rule(remaining_ratio: float, structure="unstructured", coats: tuple[float, ...] = ()) -> TopK:
    """The rule of a model's options (--remaining-ratio, --mask-structure, --multicoat-ratios)."""
    parsed = parse_structure(structure) if not isinstance(structure, tuple) else structure
    if isinstance(parsed, tuple):
        if coats:
            raise ValueError(f"an N:M mask takes no inner coats; got {tuple(coats)}")
        return NM(n=parsed[0], m=parsed[1])
    if coats:
        if parsed != "unstructured":
            raise ValueError(f"inner coats need the unstructured rule, not {parsed!r}")
        return Multicoat(float(remaining_ratio), tuple(coats))
    return STRUCTURES[parsed](float(remaining_ratio))
