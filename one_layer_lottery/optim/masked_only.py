"""Masked-only optimizers: `--optimizer masked_adam`, `masked_sgd`, ... for every fairseq optimizer.

Each wraps the fairseq optimizer of the same name (same options, same config dataclass, so
CLI flags and Hydra configs are those of the wrapped optimizer). Before it is built it checks
the tensors it is given: each must be a supermask score (or a tensor its model's family trains,
e.g. a RoBERTa classifier's head). The tensors are named by the supermask model they belong to (models are
tracked when built); fairseq's FP16Optimizer hands over fp32 copies instead (one flat tensor, or
one per parameter), which are matched to the model they copy by their shapes.
"""

import weakref

from fairseq.optim import OPTIMIZER_DATACLASS_REGISTRY, OPTIMIZER_REGISTRY, register_optimizer

from ..errors import ConfigError, install_excepthook

_MODELS = []  # weak references to the supermask models built in this process


def track_model(model) -> None:
    """Let the check find the model a tensor belongs to (called when a supermask model is built)."""
    _MODELS[:] = [ref for ref in _MODELS if ref() is not None]
    _MODELS.append(weakref.ref(model))


def _names(tensors):
    """(name, may a masked-only optimizer train it) for each tensor, read from the supermask model the tensors
    belong to, or whose fp32 copies they are; None when they are no supermask model's."""
    ids, shapes = [id(t) for t in tensors], [tuple(t.shape) for t in tensors]
    for model in filter(None, (ref() for ref in reversed(_MODELS))):
        allowed = tuple(getattr(model, "trained_besides_scores", tuple)())  # e.g. a RoBERTa model's trained head

        def entry(name, allowed=allowed):
            return name, name.endswith(".scores") or bool(allowed and name.startswith(allowed))

        by_id = {id(p): name for name, p in model.named_parameters()}
        if all(i in by_id for i in ids):
            return [entry(by_id[i]) for i in ids]
        trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        flat = len(tensors) == 1 and tensors[0].dim() == 1 and tensors[0].numel() == sum(p.numel() for _, p in trained)
        if trained and (flat or shapes == [tuple(p.shape) for _, p in trained]):
            return [entry(name) for name, _ in trained]
    return None


def check_scores_only(params, optimizer: str) -> None:
    """Refuse, in one line, tensors that are not supermask scores (or not a supermask model's at all)."""
    tensors = [t for group in params for t in (group["params"] if isinstance(group, dict) else [group])]
    entries = _names(tensors)
    if not entries:
        raise ConfigError(f"--optimizer masked_{optimizer} trains supermask models only; "
                          f"use --optimizer {optimizer} for other models")
    others = [name for name, allowed in entries if not allowed]
    if others:
        raise ConfigError(f"masked-only optimizer: {len(others)} non-score tensors require grad "
                          f"(first: {others[0]}); only supermask scores may be trained "
                          f"(drop --learned-output-scale, or use the plain optimizer)")


def _wrap(name: str, cls):
    class MaskedOnly(cls):
        def __init__(self, cfg, params, *args, **kwargs):
            install_excepthook()
            params = list(params)
            check_scores_only(params, name)
            super().__init__(cfg, params, *args, **kwargs)

    MaskedOnly.__name__ = MaskedOnly.__qualname__ = f"MaskedOnly{cls.__name__}"
    MaskedOnly.__doc__ = f"fairseq's {name} optimizer, refusing to train anything but supermask scores."
    register_optimizer(f"masked_{name}", dataclass=OPTIMIZER_DATACLASS_REGISTRY.get(name))(MaskedOnly)


for _name, _cls in sorted(OPTIMIZER_REGISTRY.items()):
    if not _name.startswith("masked_") and f"masked_{_name}" not in OPTIMIZER_REGISTRY:
        _wrap(_name, _cls)
