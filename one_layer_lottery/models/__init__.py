from . import supermask_roberta, supermask_transformer  # noqa: F401
