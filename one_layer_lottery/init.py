"""Random weights as pure functions of (weight seed, tensor name, init spec).

Every frozen tensor draws from its own CPU generator seeded from a hash of the
weight seed and the tensor's name, so the weights do not depend on the global
RNG state, on the order in which modules are built, or on the device.

Each tensor role (attention q/k/v, attention output, FFN, token embeddings,
untied output projection) has its own InitSpec. A preset gives all five; flags
that name a role override one. `role_specs` builds them once from the config.
"""

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .masks import check_remaining_ratio

WEIGHT_INITS = ("kaiming_uniform", "xavier_uniform", "signed_constant", "bert_normal")
BERT_STD = 0.02  # bert_normal: N(0, 0.02^2) whatever the fan (BERT, RoBERTa and the authors' RoBERTa code)
SCORE_INITS = ("kaiming_uniform", "kaiming_normal", "magnitude")
ROLES = ("qkv", "attn_out", "ffn", "embed", "output")
LAYER_ROLES = ("qkv", "attn_out", "ffn")


@dataclass(frozen=True)
class InitSpec:
    """How one role's frozen random weights are drawn."""

    method: str = "kaiming_uniform"
    remaining_ratio: float = 0.5
    scale: bool = True  # scale the std by sqrt(1/remaining_ratio) (Shen et al. 2021, Sec. 4)
    gain: float = 1.0  # a plain multiplier on top

    def __post_init__(self) -> None:
        if self.method not in WEIGHT_INITS:
            raise ValueError(f"weight init {self.method!r} is unknown; allowed: {', '.join(WEIGHT_INITS)}")
        check_remaining_ratio(self.remaining_ratio)
        if not (isinstance(self.gain, (int, float)) and 0.0 < self.gain < math.inf):
            raise ValueError(f"init gain {self.gain!r} must be a positive finite number")


# preset -> role -> (method, scaled by sqrt(1/k), gain)
PRESETS: dict[str, dict[str, tuple[str, bool, float]]] = {
    # measured best here (README, "Inits per tensor role" and "Ablation"): quiet residual branches, a loud table
    "tuned": {"qkv": ("xavier_uniform", False, 1.0), "attn_out": ("xavier_uniform", False, 1.0),
              "ffn": ("xavier_uniform", False, 1.0), "embed": ("kaiming_uniform", True, 1.0),
              "output": ("kaiming_uniform", True, 1.0)},
    # the paper's text (Sec. 4): kaiming uniform, std scaled by sqrt(1/k), for every tensor
    "paper": {r: ("kaiming_uniform", True, 1.0) for r in ROLES},
    # the authors' code with its IWSLT flags (--init kaiming_uniform --scale-fan, a no-op for that init):
    # fairseq's attention init (xavier, gain 1/sqrt(2) for q/k/v), kaiming elsewhere, nothing scaled; their
    # untied output projection is N(0, dim^-1/2), here uniform with that std
    "authors": {"qkv": ("xavier_uniform", False, 1 / math.sqrt(2)), "attn_out": ("xavier_uniform", False, 1.0),
                "ffn": ("kaiming_uniform", False, 1.0), "embed": ("kaiming_uniform", False, 1.0),
                "output": ("kaiming_uniform", False, 1 / math.sqrt(2))},
    # the authors' RoBERTa code (init_bert_params): N(0, 0.02) for every masked linear and embedding table, unscaled
    "bert": {r: ("bert_normal", False, 1.0) for r in ROLES},
}


def role_specs(cfg) -> dict[str, InitSpec]:
    """One InitSpec per role from a model config: the preset, then --weight-init (the three layer
    roles), then --ROLE-init and --ROLE-gain, then --no-scale-init (no role scaled)."""
    preset = str(getattr(cfg, "init_preset", None) or "tuned")
    if preset not in PRESETS:
        raise ValueError(f"init preset {preset!r} is unknown; allowed: {', '.join(PRESETS)}")
    k = float(cfg.remaining_ratio)
    specs = {}
    for role, (method, scale, gain) in PRESETS[preset].items():
        if role in LAYER_ROLES and getattr(cfg, "weight_init", None):
            method = str(cfg.weight_init)
        method = str(getattr(cfg, f"{role}_init", None) or method)
        gain *= float(getattr(cfg, f"{role}_gain", None) or 1.0)
        specs[role] = InitSpec(method, k, scale and not getattr(cfg, "no_scale_init", False), gain)
    return specs


def role_of(name: str) -> str:
    """The role of a masked linear from its module path (fairseq's attribute names)."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf in ("q_proj", "k_proj", "v_proj"):
        return "qkv"
    if leaf == "out_proj":
        return "attn_out"
    if leaf == "output_projection":
        return "output"
    return "ffn"  # fc1, fc2 and the rare project_in/out_dim


def stream_seed(weight_seed: int, name: str) -> int:
    """A 63-bit generator seed for one named tensor (stable across Python runs and machines)."""
    digest = hashlib.sha256(f"{int(weight_seed)}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generate_weight(weight_seed: int, name: str, shape: Sequence[int], spec: InitSpec) -> torch.Tensor:
    """The frozen fp32 weight called `name`."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(stream_seed(weight_seed, name))
    fan_out, fan_in = shape[0], shape[1]
    factor = 1.0 / spec.remaining_ratio if spec.scale else 1.0
    if spec.method == "bert_normal":
        w = torch.empty(tuple(shape), dtype=torch.float32).normal_(0.0, BERT_STD * math.sqrt(factor), generator=gen)
    else:
        u = torch.empty(tuple(shape), dtype=torch.float32).uniform_(-1.0, 1.0, generator=gen)
        # the arithmetic of format-1 artifacts, kept bit for bit (they regenerate their weights with it)
        if spec.method == "xavier_uniform":
            w = u * math.sqrt(6.0 / (fan_in + fan_out) * factor)
        elif spec.method == "signed_constant":
            std = math.sqrt(2.0 / fan_in * factor)
            w = torch.where(u >= 0, std, -std)
        else:
            w = u * math.sqrt(2.0 / fan_in * factor) * math.sqrt(3.0)
    return w * spec.gain if spec.gain != 1.0 else w


def init_scores_(scores: torch.Tensor, method: str, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Initialise a score tensor in place from the global RNG (seeded by fairseq's --seed).

    `magnitude` starts from the mask of the largest |W| (needs `weight`), perturbed by 20 % noise of the
    global RNG so that the depths of a one-layer model, which share W, start from different masks; the
    scores have kaiming_uniform's range, so the learning rate means the same.
    """
    if method == "magnitude":
        if weight is None:
            raise ValueError("score init 'magnitude' needs the weight")
        a = weight.detach().float().abs()
        noise = 1 + 0.2 * torch.randn(scores.shape)
        bound = 1 / math.sqrt(scores.shape[1])
        with torch.no_grad():
            return scores.copy_(a / a.max().clamp_min(1e-12) * noise * bound)
    if method == "kaiming_uniform":
        return torch.nn.init.kaiming_uniform_(scores, a=math.sqrt(5))
    if method == "kaiming_normal":
        return torch.nn.init.kaiming_normal_(scores)
    raise ValueError(f"score init {method!r} is unknown; allowed: {', '.join(SCORE_INITS)}")
