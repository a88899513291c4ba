"""Files, in one place: reading a checkpoint with a one-line error, atomic writes, and which state-dict keys are
regenerated from the weight seed (never stored)."""

import contextlib
import os
import tempfile

import torch

from .errors import ConfigError


def read_checkpoint(path: str, what: str = "checkpoint") -> dict:
    """A fairseq checkpoint (safe loading), or one ConfigError line naming the file."""
    if not os.path.isfile(path):
        raise ConfigError(f"{what} {path!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state["model"]
    except Exception as e:  # noqa: BLE001 - truncated, corrupt or foreign files are one user error
        raise ConfigError(f"{what} {path!r} is not a readable fairseq checkpoint ({type(e).__name__})") from None
    return state


@contextlib.contextmanager
def atomic_path(path: str):
    """A temporary path beside `path` that replaces it when the block succeeds: a crash or an error never leaves a
    half-written file at `path` (nor the temporary one)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def save_figure(fig, png: str, dpi: int = 100) -> None:
    """A matplotlib figure as a PNG, atomically; the figure is closed."""
    import matplotlib.pyplot as plt

    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


def save(obj, path: str) -> None:
    """torch.save, atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def is_regenerated(key: str) -> bool:
    """Whether a supermask state-dict entry is rebuilt from the weight seed (so no artifact or byte count holds it)."""
    return key.endswith((".frozen_weight", ".version")) or ".shared_layer_weights." in key
