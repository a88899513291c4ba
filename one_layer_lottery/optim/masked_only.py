"""Masked-only optimizers: `--optimizer masked_adam`, `masked_sgd`, ... for every fairseq optimizer.

Each wraps the fairseq optimizer of the same name (same options, same config dataclass, so
CLI flags and Hydra configs are those of the wrapped optimizer). Before it is built it checks
that the model being trained has nothing trainable but supermask scores; since the trainer
hands over only tensors that require grad, optimizer state then exists for scores only.
"""

import weakref

from fairseq.optim import OPTIMIZER_DATACLASS_REGISTRY, OPTIMIZER_REGISTRY, register_optimizer

from ..errors import ConfigError, install_excepthook

_MODELS = []  # weak references to supermask models built in this process, newest last


def track_model(model) -> None:
    _MODELS.append(weakref.ref(model))


def check_scores_only(model) -> None:
    """Refuse, in one line, a model where anything but scores would be trained."""
    allowed = tuple(getattr(model, "trained_besides_scores", tuple)())  # e.g. a RoBERTa model's trained head
    others = [n for n, p in model.named_parameters()
              if p.requires_grad and not n.endswith(".scores") and not n.startswith(allowed or ("\0",))]
    if others:
        raise ConfigError(f"masked-only optimizer: {len(others)} non-score tensors require grad "
                          f"(first: {others[0]}); only supermask scores may be trained "
                          f"(drop --learned-output-scale, or use the plain optimizer)")


def _latest_model():
    while _MODELS:
        model = _MODELS[-1]()
        if model is not None:
            return model
        _MODELS.pop()
    return None


def _wrap(name: str, cls):
    class MaskedOnly(cls):
        def __init__(self, cfg, params, *args, **kwargs):
            install_excepthook()
            model = _latest_model()
            if model is None:
                raise ConfigError(f"--optimizer masked_{name} trains supermask models only; "
                                  f"use --optimizer {name} for other models")
            check_scores_only(model)
            super().__init__(cfg, params, *args, **kwargs)

    MaskedOnly.__name__ = MaskedOnly.__qualname__ = f"MaskedOnly{cls.__name__}"
    MaskedOnly.__doc__ = f"fairseq's {name} optimizer, refusing to train anything but supermask scores."
    register_optimizer(f"masked_{name}", dataclass=OPTIMIZER_DATACLASS_REGISTRY.get(name))(MaskedOnly)


for _name, _cls in sorted(OPTIMIZER_REGISTRY.items()):
    if not _name.startswith("masked_") and f"masked_{_name}" not in OPTIMIZER_REGISTRY:
        _wrap(_name, _cls)
