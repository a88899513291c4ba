from . import supermask_transformer  # noqa: F401
