"""2:4 supermasks on sparse tensor cores, for inference.

A model trained with `--mask-structure 2:4` keeps two of every four consecutive input weights of each
masked linear: the pattern Ampere and Hopper tensor cores multiply at up to twice the dense rate.
`sparsify_(model)` stores the masked weights of the layers where that pays as torch's semi-structured
sparse tensors; every other layer, and every layer where the hardware, dtype or shape does not allow it,
keeps dense storage, with the reason recorded. Which layers pay is measured per weight shape at the
batch size the caller names (small matrices and few rows run slower sparse than dense), or given.

Facts this relies on (torch 2.13): `torch.sparse.to_sparse_semi_structured` takes 2-d CUDA tensors in
fp16/bf16 (and int8/fp8); its CUTLASS kernels target sm80, so Hopper needs the cuSPARSELt backend; each
backend has minimum row/column multiples; `F.linear(x, w_sparse)` pads the rows of `x` itself. Embedding
lookups cannot read a sparse table, so a tied output projection stays dense.
"""

import dataclasses
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from .masks import NM
from .supermask import MaskedLinear, supermask_modules

HALF = (torch.float16, torch.bfloat16)


def is_2_4(mask: Tensor) -> bool:
    """Whether every group of four consecutive entries along the last dimension keeps exactly two."""
    if mask.shape[-1] % 4:
        return False
    return bool(mask.reshape(-1, 4).ne(0).sum(1).eq(2).all())


def backend(capability: tuple[int, int], cusparselt: bool) -> str | None:
    """The semi-structured backend a GPU of this compute capability can use, or None."""
    if capability < (8, 0):
        return None
    if cusparselt:
        return "cusparselt"
    return "cutlass" if capability[0] == 8 else None  # CUTLASS's kernels are built for sm80 (and sm86/89)


def shape_constraint(kind: str, dtype: torch.dtype) -> tuple[int, int]:
    """(row multiple, column multiple) a sparse weight needs under this backend."""
    cls = (torch.sparse.SparseSemiStructuredTensorCUSPARSELT if kind == "cusparselt"
           else torch.sparse.SparseSemiStructuredTensorCUTLASS)
    c = cls._DTYPE_SHAPE_CONSTRAINTS[dtype]
    return c.sparse_min_rows, c.sparse_min_cols


def device_backend(device: torch.device) -> str | None:
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return backend(torch.cuda.get_device_capability(device), torch.backends.cusparselt.is_available())


def convert(weight: Tensor) -> Tensor:
    """torch's semi-structured tensor of a 2:4 weight, on the backend this GPU has (CUTLASS where cuSPARSELt is
    missing: torch otherwise always picks cuSPARSELt)."""
    from torch.sparse import SparseSemiStructuredTensor

    SparseSemiStructuredTensor._FORCE_CUTLASS = device_backend(weight.device) == "cutlass"
    return torch.sparse.to_sparse_semi_structured(weight)


def why_dense(module, shape: tuple[int, int], dtype: torch.dtype, device_type: str, kind: str | None) -> str | None:
    """Why this module must keep dense storage, or None when a sparse weight is possible."""
    if not isinstance(module, MaskedLinear) or module.rule != NM(n=2, m=4):
        return "not a 2:4 masked linear"
    if device_type != "cuda":
        return f"sparse tensor cores need a CUDA device (this one is {device_type})"
    if kind is None:
        return "this GPU has no semi-structured backend (needs sm80+; Hopper needs cuSPARSELt)"
    if dtype not in HALF:
        return f"the sparse kernels used here take fp16 or bf16 (the model is {str(dtype).replace('torch.', '')})"
    rows, cols = shape_constraint(kind, dtype)
    if shape[0] % rows or shape[1] % cols:
        return f"shape {shape[0]}x{shape[1]} is not a multiple of ({rows}, {cols}) for {kind}"
    return None


@dataclasses.dataclass
class LayerTiming:
    """One weight shape at one batch: dense and sparse matmul time, and whether sparse storage is chosen."""

    shape: tuple[int, int]
    tokens: int
    dense_ms: float
    sparse_ms: float
    convert: bool = False

    @property
    def speedup(self) -> float:
        return self.dense_ms / self.sparse_ms if self.sparse_ms > 0 else 0.0


def random_2_4(shape: tuple[int, int], dtype: torch.dtype, device) -> Tensor:
    """A random weight with a 2:4 pattern (for timing)."""
    w = torch.randn(shape, device=device, dtype=dtype)
    keep = torch.rand(shape[0], shape[1] // 4, 4, device=device).argsort(-1)[..., :2]
    mask = torch.zeros(shape[0], shape[1] // 4, 4, device=device, dtype=torch.bool).scatter_(-1, keep, True)
    return w * mask.view(shape)


def time_linear(shape: tuple[int, int], tokens: int, dtype: torch.dtype, device, repeats: int = 50) -> LayerTiming:
    """Median CUDA time of x @ W^T with W stored dense and semi-structured (each after its own warm-up)."""
    w = random_2_4(shape, dtype, device)
    ws = convert(w)
    x = torch.randn(tokens, shape[1], device=device, dtype=dtype)
    out = {}
    for name, weight in (("dense", w), ("sparse", ws)):
        for _ in range(5):
            F.linear(x, weight)
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            F.linear(x, weight)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        out[name] = sorted(times)[len(times) // 2]
    return LayerTiming(tuple(shape), tokens, out["dense"], out["sparse"])


def choose(shapes: Iterable[tuple[int, int]], tokens: int, timer: Callable[[tuple[int, int], int], LayerTiming],
           min_speedup: float = 1.05) -> dict[tuple[int, int], LayerTiming]:
    """Time every distinct shape once; convert those at least `min_speedup` faster sparse."""
    plan = {}
    for shape in dict.fromkeys(tuple(s) for s in shapes):
        t = timer(shape, tokens)
        t.convert = t.speedup >= min_speedup
        plan[shape] = t
    return plan


def sparsify_(model, tokens: int = 8192, min_speedup: float = 1.05,
              plan: dict[tuple[int, int], LayerTiming] | None = None,
              timer: Callable[[tuple[int, int], int], LayerTiming] | None = None,
              to_sparse: Callable[[Tensor], Tensor] | None = None) -> dict:
    """Store the masked weights of the 2:4 layers that pay as semi-structured sparse tensors (inference only).

    Returns {"modules": {name: "sparse" or the reason it stays dense}, "plan": {shape: timing}}. `timer` and
    `to_sparse` default to CUDA timing and torch's conversion (tests inject others).
    """
    model.eval()
    candidates, report = {}, {}
    for name, m in supermask_modules(model):
        if not isinstance(m, MaskedLinear):
            continue
        w = m.masked_weight()
        reason = why_dense(m, tuple(w.shape), w.dtype, w.device.type, device_backend(w.device))
        if reason is None and not is_2_4(w.ne(0) | m.mask()):
            reason = "the masked weight is not 2:4"
        if reason:
            report[name] = reason
        else:
            candidates[name] = (m, w)
    if candidates and plan is None:
        if timer is None:
            dtype = next(iter(candidates.values()))[1].dtype
            device = next(iter(candidates.values()))[1].device

            def timer(shape, n):
                return time_linear(shape, n, dtype, device)
        plan = choose((tuple(w.shape) for _, w in candidates.values()), tokens, timer, min_speedup)
    to_sparse = to_sparse or convert
    for name, (m, w) in candidates.items():
        t = (plan or {}).get(tuple(w.shape))
        if t is None or not t.convert:
            report[name] = (f"dense is faster at {tokens} tokens (sparse {t.speedup:.2f}x)" if t
                            else "not in the given plan")
            continue
        m.set_inference_weight(to_sparse(w.contiguous()))
        report[name] = "sparse"
    return {"modules": report, "plan": {f"{s[0]}x{s[1]}": dataclasses.asdict(t) | {"speedup": round(t.speedup, 3)}
                                        for s, t in (plan or {}).items()}}


def densify_(model) -> None:
    """Back to dense storage everywhere."""
    for _, m in supermask_modules(model):
        if isinstance(m, MaskedLinear):
            m.set_inference_weight(None)
