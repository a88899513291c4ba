"""one_layer_lottery: supermasks in (one-layer) randomly weighted Transformers, as a fairseq user-dir."""

__version__ = "0.1.0"

from .compat import allow_fairseq_checkpoints, atomic_checkpoint_copies, bf16_without_tpu
from .errors import install_excepthook

install_excepthook()
allow_fairseq_checkpoints()
atomic_checkpoint_copies()
bf16_without_tpu()

from . import models, optim, pruning  # noqa: F401  (registers the models, architectures and optimizers)

pruning.install()
