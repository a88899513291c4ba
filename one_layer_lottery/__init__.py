"""one_layer_lottery: supermasks in (one-layer) randomly weighted Transformers, as a fairseq user-dir."""

__version__ = "0.1.0"

from .errors import install_excepthook
from .safe_load import allow_fairseq_checkpoints

install_excepthook()
allow_fairseq_checkpoints()

from . import models, optim  # noqa: E402,F401  (registers the models, architectures and optimizers)
