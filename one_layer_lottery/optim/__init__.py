from . import masked_only  # noqa: F401
