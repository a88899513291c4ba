"""Files, in one place: reading a checkpoint with a one-line error, atomic writes, and which state-dict keys are
regenerated from the weight seed (never stored)."""

import contextlib
import logging
import math
import os
import tempfile

import torch

from .errors import ConfigError


def require_file(path: str, what: str) -> None:
    """One ConfigError line unless `path` is a file: missing, or a directory."""
    if os.path.isdir(path):
        raise ConfigError(f"{what} {path!r} is a directory, not a file")
    if not os.path.isfile(path):
        raise ConfigError(f"{what} {path!r} does not exist")


def read_checkpoint(path: str, what: str = "checkpoint") -> dict:
    """A fairseq checkpoint (safe loading), or one ConfigError line naming the file."""
    require_file(path, what)
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
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a new file's mode, as open() would give it: mkstemp's is 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def pyplot():
    """matplotlib's pyplot on the Agg backend with its logging at WARNING: fairseq sets the root logger to DEBUG when
    it imports its wav2vec2 classification module, and matplotlib's import and font search then print pages of debug
    lines. Every plot here starts with this."""
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # before the import, which logs too
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, png: str, dpi: int = 100) -> None:
    """A matplotlib figure as a PNG, atomically; the figure is closed."""
    import matplotlib.pyplot as plt

    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


def save(obj, path: str) -> None:
    """torch.save, atomically, the same bytes for the same object whatever the path: torch names the archive's
    records after the file it writes, which here is a temporary name, so it writes through a file object."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def weights_checkpoint(cfg, model: dict, history: dict | None = None) -> dict:
    """A fairseq checkpoint of a model's weights alone, as fairseq's loader takes it (fairseq-generate,
    fairseq-interactive): no optimizer state; `history` is the training's last optimizer-history entry, if any."""
    history = history or {"criterion_name": "none", "optimizer_name": "none", "lr_scheduler_state": {"best": None},
                          "num_updates": 0}
    return {"cfg": cfg, "model": model, "args": None, "last_optimizer_state": None,
            "optimizer_history": [{k: v for k, v in history.items() if k != "optimizer"}],
            "extra_state": {"train_iterator": {"epoch": 1}}}


def is_regenerated(key: str) -> bool:
    """Whether a supermask state-dict entry is rebuilt from the weight seed (so no artifact or byte count holds it)."""
    return key.endswith((".frozen_weight", ".version")) or ".shared_layer_weights." in key


def stored_bytes(state: dict, kept: dict[str, int] | None = None, value_bytes: int = 2) -> int:
    """The one rule for the bytes a model takes to store, for every kind of model here: each float tensor in fp16
    (each storage once), except what is regenerated from the weight seed (nothing); a supermask's scores as its
    mask, 1 bit a weight; a tensor named in `kept` (a pruned weight) as 1 bit a position plus its kept values.

    A supermask's artifact stores just this, with its weight seed (8 bytes), config, dictionaries and sentencepiece
    models."""
    kept = kept or {}
    total, seen = 0, set()
    if any(is_regenerated(k) and not k.endswith(".version") for k in state):
        total += 8  # the weight seed
    for k, v in state.items():
        if not v.is_floating_point() or is_regenerated(k) or v.data_ptr() in seen:
            continue
        seen.add(v.data_ptr())
        if k.endswith(".scores"):
            total += math.ceil(v.numel() / 8)
        elif k in kept:
            total += math.ceil(v.numel() / 8) + value_bytes * kept[k]
        else:
            total += value_bytes * v.numel()
    return total
