"""The supermask options both families share, written once: the dataclass fields (their help is the options page,
docs/options.md), one validation, and the one object built from them that the builders are handed (`Supermask`).
"""

import argparse
import dataclasses
from typing import Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from omegaconf import II, OmegaConf, open_dict

from ..errors import ConfigError
from ..init import PRESETS, ROLES, SCORE_INITS, WEIGHT_INITS, InitSpec, role_specs
from ..masks import STRUCTURES, TopK, check_coat_ratios, check_remaining_ratio, make_rule, parse_structure

ROLE_HELP = {"qkv": "attention q/k/v projections", "attn_out": "attention output projection",
             "ffn": "FFN (fc1, fc2)", "embed": "masked random token embedding tables",
             "output": "untied output projection"}


# typing.Optional, not X | None: fairseq's argparse generator only understands the former
@dataclasses.dataclass
class SupermaskOptions(FairseqDataclass):
    """Our options on top of fairseq's model ones."""

    remaining_ratio: float = dataclasses.field(
        default=0.5, metadata={"help": "k in (0, 1]: fraction of each weight tensor the mask keeps"})
    share_layer_weights: bool = dataclasses.field(
        default=False, metadata={"help": "one-layer variant: one random layer reused at every depth, "
                                         "a different mask per depth"})
    init_preset: ChoiceEnum(tuple(PRESETS)) = dataclasses.field(  # type: ignore[valid-type]
        default="tuned", metadata={"help": "init of every tensor role: tuned (measured best: xavier unscaled "
                                           "layers, kaiming sqrt(1/k)-scaled embedding table), paper (kaiming, "
                                           "sqrt(1/k)-scaled, everywhere), authors (the published code), bert "
                                           "(N(0, 0.02) everywhere, unscaled: the authors' RoBERTa init)"})
    weight_init: Optional[str] = dataclasses.field(  # noqa: UP045
        default=None, metadata={"help": f"init of the layer roles (attention q/k/v and output, FFN), "
                                        f"overriding the preset: {', '.join(WEIGHT_INITS)}"})
    no_scale_init: bool = dataclasses.field(
        default=False, metadata={"help": "scale no role's std by sqrt(1/remaining_ratio), whatever the preset"})
    score_init: ChoiceEnum(SCORE_INITS) = dataclasses.field(  # type: ignore[valid-type]
        default="kaiming_uniform", metadata={"help": "initialisation of the scores"})
    pretrained_embeddings: Optional[str] = dataclasses.field(  # noqa: UP045
        default=None, metadata={"help": "a trained dense fairseq checkpoint: its encoder/decoder token "
                                        "embeddings are used frozen and unmasked"})
    weight_seed: Optional[int] = dataclasses.field(  # noqa: UP045
        default=II("common.seed"), metadata={"help": "seed of the frozen random weights (default: --seed)"})
    learned_output_scale: bool = dataclasses.field(
        default=False, metadata={"help": "one trained float multiplying the logits (then not masks-only: train "
                                         "with a plain optimizer); stored in the artifact"})
    pretrained_embeddings_mode: ChoiceEnum(("frozen", "masked")) = dataclasses.field(  # type: ignore[valid-type]
        default="frozen", metadata={"help": "frozen: the pre-trained tables as they are; masked: masked like every "
                                            "other weight, scaled as the embed role is (the authors' default)"})
    multicoat_ratios: Optional[str] = dataclasses.field(  # noqa: UP045
        default=None, metadata={"help": "multicoated supermask (Okoshi et al. 2022): comma-separated remaining "
                                        "ratios of inner coats, decreasing, below --remaining-ratio; a weight "
                                        "counts once per coat that keeps it (stored in 1 + k + the coats but the last bits a "
                                        "weight: each inner coat only where the coat around it keeps)"})
    mask_structure: str = dataclasses.field(
        default="unstructured", metadata={"help": "the mask rule (masks.py): " + "; ".join(
            f"{name}: {rule.__doc__.splitlines()[0].rstrip('.')}" for name, rule in STRUCTURES.items()) +
            "; or N:M: n of every m consecutive weights along the input dimension, e.g. 2:4 for sparse tensor "
            "cores (--remaining-ratio must be N/M)"})
    ratio_anneal_updates: int = dataclasses.field(
        default=0, metadata={"help": "anneal k from 1 to --remaining-ratio over this many updates (the cubic "
                                     "gradual schedule of Zhu & Gupta 2017); 0: k fixed from the start"})
    layer_score_lr_scale: Optional[float] = dataclasses.field(  # noqa: UP045
        default=None, metadata={"help": "learning rate of the Transformer layers' scores relative to --lr "
                                        "(embedding, output and head scores keep --lr); done by starting those "
                                        "scores 1/scale times larger, exact for Adam and SGD without weight "
                                        "decay (a mask depends only on its scores' order). Default: 1 for "
                                        "translation, 0.1 for RoBERTa classifiers"})
    # not a flag (fairseq makes none of a field starting with _): recorded by the model once it has read the tables,
    # so that loading a checkpoint takes them from its state dict instead of reading --pretrained-embeddings again
    _pretrained_embeddings_in_checkpoint: bool = False


SupermaskOptions = dataclasses.make_dataclass("SupermaskOptions", [
    field for role in ROLES for field in (
        (f"{role}_init", Optional[str], dataclasses.field(  # noqa: UP045
            default=None, metadata={"help": f"init of the {ROLE_HELP[role]}, overriding the preset and "
                                            f"--weight-init: {', '.join(WEIGHT_INITS)}"})),
        (f"{role}_gain", float, dataclasses.field(
            default=1.0, metadata={"help": f"multiplier on the std of the {ROLE_HELP[role]}"})))],
    bases=(SupermaskOptions,))


def option_fields(flags_only: bool = False):
    """The fields of SupermaskOptions (not fairseq's _name); with `flags_only`, those that are command-line flags."""
    return [f for f in dataclasses.fields(SupermaskOptions) if f.name != "_name"
            and not (flags_only and f.name.startswith("_"))]


def add_flags(parser, dataclass_fields) -> None:
    """Command-line flags of these dataclass fields (their help as fairseq writes it), without defaults, so that the
    architecture functions can set them (as fairseq does)."""
    from fairseq.dataclass.utils import gen_parser_from_dataclass

    flags = dataclasses.make_dataclass("Flags", [(f.name, f.type, f) for f in dataclass_fields
                                                 if not f.name.startswith("_")], bases=(FairseqDataclass,))
    gen_parser_from_dataclass(parser, flags(), delete_default=True, with_prefix="")


@dataclasses.dataclass(frozen=True)
class Supermask:
    """Everything a builder needs to make masked modules, built once from validated options."""

    weight_seed: int
    init_specs: dict[str, InitSpec]
    rule: TopK
    score_init: str
    share_layer_weights: bool
    learned_output_scale: bool = False
    layer_score_lr_scale: float = 1.0
    ratio_anneal_updates: int = 0


def as_namespace(cfg) -> argparse.Namespace:
    """A plain namespace of a model config (argparse, omegaconf or dataclass), resolved."""
    if isinstance(cfg, argparse.Namespace):
        return argparse.Namespace(**vars(cfg))
    if OmegaConf.is_config(cfg):
        return argparse.Namespace(**OmegaConf.to_container(cfg, resolve=True))
    return argparse.Namespace(**{k: getattr(cfg, k) for k in cfg.__dataclass_fields__})


def record(cfg, key: str, value) -> None:
    """Write a resolved value back into the config fairseq will save in checkpoints."""
    if OmegaConf.is_config(cfg):
        with open_dict(cfg):
            cfg[key] = value
    else:
        setattr(cfg, key, value)


def defaults_(args) -> None:
    """Fill options the namespace lacks (or holds as None where the field has a value) with their defaults."""
    for f in option_fields():
        if not hasattr(args, f.name) or (getattr(args, f.name) is None and f.default is not None
                                         and f.name != "weight_seed"):
            setattr(args, f.name, f.default)


def supermask_of(args, cfg, default_layer_score_lr_scale: float = 1.0) -> Supermask:
    """Validate the options of a model namespace and build its Supermask; the resolved weight seed is recorded in
    `cfg`, the config fairseq saves."""
    validate(args)
    seed = args.weight_seed
    if seed is None or str(seed).startswith("${"):
        seed = getattr(args, "seed", 1)
    try:
        seed = int(seed)
    except ValueError:
        raise ConfigError(f"--weight-seed {seed!r} is not an integer") from None
    args.weight_seed = seed
    record(cfg, "weight_seed", seed)
    return Supermask(seed, role_specs(args), mask_rule(args), str(args.score_init), bool(args.share_layer_weights),
                     bool(getattr(args, "learned_output_scale", False)),
                     float(getattr(args, "layer_score_lr_scale", None) or default_layer_score_lr_scale),
                     int(getattr(args, "ratio_anneal_updates", 0) or 0))


# ---- validation: bad values are refused where they enter, in one line naming the value -----------------

def validate(args) -> None:
    """Reject bad options before anything is built."""
    try:
        check_remaining_ratio(args.remaining_ratio)
    except ValueError as e:
        raise ConfigError(f"--remaining-ratio: {e}") from None
    _check_inits(args)
    scale = getattr(args, "layer_score_lr_scale", None)
    if scale is not None and not (isinstance(scale, (int, float)) and 0 < scale < float("inf")):
        raise ConfigError(f"--layer-score-lr-scale {scale!r} must be a positive finite number")
    n = getattr(args, "ratio_anneal_updates", 0)
    if not (isinstance(n, int) and n >= 0):
        raise ConfigError(f"--ratio-anneal-updates {n!r} must be a non-negative integer")
    _check_structure(args)
    if getattr(args, "adaptive_softmax_cutoff", None):
        raise ConfigError("--adaptive-softmax-cutoff is not supported by supermask models")
    if getattr(args, "checkpoint_activations", False):
        raise ConfigError("--checkpoint-activations is not supported by supermask models")


def _check_inits(args) -> None:
    for flag in ("weight_init", *(f"{r}_init" for r in ROLES)):
        value = getattr(args, flag, None)
        if value is not None and str(value) not in WEIGHT_INITS:
            raise ConfigError(f"--{flag.replace('_', '-')} {value!r} is unknown; allowed: {', '.join(WEIGHT_INITS)}")
    for role in ROLES:
        gain = getattr(args, f"{role}_gain", 1.0)
        if not (isinstance(gain, (int, float)) and 0 < gain < float("inf")):
            raise ConfigError(f"--{role.replace('_', '-')}-gain {gain!r} must be a positive finite number")
    if str(args.init_preset) not in PRESETS:
        raise ConfigError(f"--init-preset {args.init_preset!r} is unknown; allowed: {', '.join(PRESETS)}")
    if str(args.score_init) not in SCORE_INITS:
        raise ConfigError(f"--score-init {args.score_init!r} is unknown; allowed: {', '.join(SCORE_INITS)}")


def _check_structure(args) -> None:
    coats, structure = coat_ratios(args), mask_structure(args)
    if not isinstance(structure, tuple):
        if structure != "unstructured" and coats:
            raise ConfigError(f"--multicoat-ratios needs --mask-structure unstructured (inner coats are top-k over "
                              f"the whole tensor), not {structure!r}")
        return
    n, m = structure
    text = f"--mask-structure {n}:{m}"
    if abs(float(args.remaining_ratio) - n / m) > 1e-9:
        raise ConfigError(f"--remaining-ratio {args.remaining_ratio} must equal N/M = {n / m:g} for {text}")
    if coats or getattr(args, "ratio_anneal_updates", 0):
        raise ConfigError(f"{text} keeps exactly N of every M weights: it takes neither --multicoat-ratios "
                          f"nor --ratio-anneal-updates")
    for side in ("encoder", "decoder"):
        for dim in ("embed_dim", "ffn_embed_dim"):
            value = getattr(args, f"{side}_{dim}", None)
            if value is not None and int(value) % m:
                raise ConfigError(f"--{side}-{dim.replace('_', '-')} {value} is not a multiple of M = {m} "
                                  f"({text} groups M consecutive input weights)")


def mask_structure(args) -> tuple[int, int] | str:
    """--mask-structure as (N, M), or the name of an unstructured rule (masks.STRUCTURES); checked."""
    try:
        return parse_structure(getattr(args, "mask_structure", None))
    except ValueError as e:
        raise ConfigError(f"--mask-structure {e}") from None


def coat_ratios(args) -> tuple[float, ...]:
    """--multicoat-ratios as numbers, checked; () for a plain supermask."""
    text = getattr(args, "multicoat_ratios", None)
    if text is None or str(text).strip() == "":
        return ()
    try:
        values = [float(v) for v in str(text).split(",")]
        return tuple(check_coat_ratios(values, float(args.remaining_ratio)))
    except ValueError as e:
        raise ConfigError(f"--multicoat-ratios {text!r}: {e}; give decreasing ratios below --remaining-ratio, "
                          f"e.g. 0.25 or 0.3,0.15") from None


def mask_rule(args) -> TopK:
    """The mask rule of validated options (--remaining-ratio, --mask-structure, --multicoat-ratios)."""
    return make_rule(float(args.remaining_ratio), mask_structure(args), coat_ratios(args))
