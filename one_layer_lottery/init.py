"""Random weights as pure functions of (weight seed, tensor name, init spec).

Every frozen tensor draws from its own CPU generator seeded from a hash of the
weight seed and the tensor's name, so the weights do not depend on the global
RNG state, on the order in which modules are built, or on the device.
"""

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

WEIGHT_INITS = ("kaiming_uniform", "xavier_uniform", "signed_constant")
SCORE_INITS = ("kaiming_uniform", "kaiming_normal")


@dataclass(frozen=True)
class InitSpec:
    """How frozen random weights are drawn."""

    method: str = "kaiming_uniform"
    remaining_ratio: float = 0.5
    scale: bool = True  # scale the std by sqrt(1/remaining_ratio) (Shen et al. 2021, Sec. 4)

    def __post_init__(self) -> None:
        if self.method not in WEIGHT_INITS:
            raise ValueError(f"weight init {self.method!r} is unknown; allowed: {', '.join(WEIGHT_INITS)}")
        check_remaining_ratio(self.remaining_ratio)


def check_remaining_ratio(k: float) -> float:
    if not (isinstance(k, (int, float)) and 0.0 < k <= 1.0):
        raise ValueError(f"remaining ratio {k!r} is outside (0, 1]: it is the fraction of weights kept")
    return float(k)


def stream_seed(weight_seed: int, name: str) -> int:
    """A 63-bit generator seed for one named tensor (stable across Python runs and machines)."""
    digest = hashlib.sha256(f"{int(weight_seed)}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generate_weight(weight_seed: int, name: str, shape: Sequence[int], spec: InitSpec) -> torch.Tensor:
    """The frozen fp32 weight called `name` (shape is (out, in) or (num_embeddings, dim))."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(stream_seed(weight_seed, name))
    fan_out, fan_in = shape[0], shape[1]
    factor = 1.0 / spec.remaining_ratio if spec.scale else 1.0
    u = torch.empty(tuple(shape), dtype=torch.float32).uniform_(-1.0, 1.0, generator=gen)
    if spec.method == "xavier_uniform":
        return u * math.sqrt(6.0 / (fan_in + fan_out) * factor)
    # kaiming (ReLU gain sqrt(2)), fan_in mode, as edge-popup does
    std = math.sqrt(2.0 / fan_in * factor)
    if spec.method == "signed_constant":
        return torch.where(u >= 0, std, -std)
    return u * std * math.sqrt(3.0)


def init_scores_(scores: torch.Tensor, method: str) -> torch.Tensor:
    """Initialise a score tensor in place from the global RNG (seeded by fairseq's --seed)."""
    if method == "kaiming_uniform":
        return torch.nn.init.kaiming_uniform_(scores, a=math.sqrt(5))
    if method == "kaiming_normal":
        return torch.nn.init.kaiming_normal_(scores)
    raise ValueError(f"score init {method!r} is unknown; allowed: {', '.join(SCORE_INITS)}")
