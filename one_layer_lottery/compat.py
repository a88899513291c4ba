"""Two fixes to how stock fairseq handles checkpoints, applied when the user-dir is imported.

* torch >= 2.6 loads with weights_only=True, and fairseq's legacy model configs pickle an
  argparse.Namespace: we add exactly that class to torch's safe-globals allow-list (safe loading
  stays on for everything else).
* fairseq writes the first checkpoint of a save atomically (.tmp, then rename) but *copies* it to
  the others (checkpoint_last.pt, checkpoint_best.pt) in place, so a kill during the copy leaves a
  truncated checkpoint. We make that copy atomic too.
"""

import argparse
import os
import shutil

import torch

# fairseq pickles its legacy (argparse) model configs, e.g. cfg.model of the dense `transformer`
FAIRSEQ_SAFE_GLOBALS = [argparse.Namespace]


def allow_fairseq_checkpoints() -> None:
    torch.serialization.add_safe_globals(FAIRSEQ_SAFE_GLOBALS)


def _atomic_copy(src_path: str, dst_path: str, overwrite: bool = False, _original=None) -> bool:
    if "://" in str(dst_path):  # remote paths: leave them to iopath
        return _original(src_path, dst_path, overwrite)
    tmp = f"{dst_path}.tmp"
    shutil.copyfile(src_path, tmp)
    os.replace(tmp, dst_path)
    return True


def atomic_checkpoint_copies() -> None:
    from fairseq.file_io import PathManager

    original = PathManager.copy
    if getattr(original, "_one_layer_lottery", False):
        return

    def copy(src_path, dst_path, overwrite=False):
        return _atomic_copy(src_path, dst_path, overwrite, _original=original)

    copy._one_layer_lottery = True
    PathManager.copy = staticmethod(copy)
