"""User-facing configuration errors: one line on stderr and exit status 1, also under stock fairseq CLIs."""

import sys


class ConfigError(ValueError):
    """A bad option or input file, reported as one line naming the value and what is allowed."""


def _excepthook(kind, value, tb, _previous=sys.excepthook):
    if isinstance(value, ConfigError):
        print(f"one_layer_lottery: error: {value}", file=sys.stderr)
        return
    _previous(kind, value, tb)


def run_main(prog: str, fn, *args) -> int:
    """Run a command's body: a ConfigError, or a path that is missing, a directory or not allowed, becomes one line
    on stderr and exit status 1."""
    try:
        result = fn(*args)
    except ConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        print(f"{prog}: error: {e.filename!r}: {e.strerror}", file=sys.stderr)
        return 1
    return result or 0


def install_excepthook() -> None:
    # fairseq-train & co. let exceptions from model building escape; turn ours into one line
    if sys.excepthook is not _excepthook:
        sys.excepthook = _excepthook
