from . import pruned_transformer, supermask_roberta, supermask_transformer  # noqa: F401
