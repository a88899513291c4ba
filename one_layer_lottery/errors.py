"""User-facing configuration errors: one line on stderr and exit status 1, also under stock fairseq CLIs."""

import sys


class ConfigError(ValueError):
    """A bad option or input file, reported as one line naming the value and what is allowed."""


def _excepthook(kind, value, tb, _previous=sys.excepthook):
    if isinstance(value, ConfigError):
        print(f"one_layer_lottery: error: {value}", file=sys.stderr)
        return
    _previous(kind, value, tb)


def install_excepthook() -> None:
    # fairseq-train & co. let exceptions from model building escape; turn ours into one line
    if sys.excepthook is not _excepthook:
        sys.excepthook = _excepthook
