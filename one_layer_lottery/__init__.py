"""one_layer_lottery: supermasks in (one-layer) randomly weighted Transformers, as a fairseq user-dir.

Importing it registers our models, architectures and optimizers, and applies the three documented fixes to stock
fairseq 0.12 (compat.py); nothing else in fairseq or torch changes.
"""

__version__ = "0.1.0"

from .compat import apply_fairseq_fixes

apply_fairseq_fixes()

from . import models, optim  # noqa: F401  (registers the models, architectures and optimizers)
