"""Three fixes to stock fairseq 0.12, applied when the user-dir is imported.

* torch >= 2.6 loads with weights_only=True, and fairseq's legacy model configs pickle an
  argparse.Namespace, and its metrics state (e.g. --eval-bleu's n-gram counts, saved in every
  checkpoint's extra_state) holds numpy arrays: we add exactly those classes to torch's safe-globals
  allow-list (numpy arrays of plain dtypes, as torch's docs name them; safe loading stays on for
  everything else).
* fairseq writes the first checkpoint of a save atomically (.tmp, then rename) but *copies* it to
  the others (checkpoint_last.pt, checkpoint_best.pt) in place, so a kill during the copy leaves a
  truncated checkpoint. We make that copy atomic too.
* fairseq-train's command line turns --bf16 (and --memory-efficient-bf16) into --tpu, so bf16 on a
  GPU dies in torch_xla (fairseq issue #4696). Where torch_xla is not installed no TPU can be
  meant: we turn --tpu back off and train bf16 on the GPU (fairseq-hydra-train never sets it).
"""

import argparse
import importlib.util
import logging
import shutil

import numpy as np
import torch

_multiarray = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
# fairseq pickles its legacy (argparse) model configs, e.g. cfg.model of the dense `transformer`, and numpy
# arrays in its metrics state (--eval-bleu's counts and totals, restored when a run resumes)
FAIRSEQ_SAFE_GLOBALS = [argparse.Namespace, np.ndarray, np.dtype, _multiarray.multiarray._reconstruct] + [
    type(np.dtype(t)) for t in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                                "float16", "float32", "float64")]


def allow_fairseq_checkpoints() -> None:
    torch.serialization.add_safe_globals(FAIRSEQ_SAFE_GLOBALS)


def _atomic_copy(src_path: str, dst_path: str, overwrite: bool = False, _original=None) -> bool:
    if "://" in str(dst_path):  # remote paths: leave them to iopath
        return _original(src_path, dst_path, overwrite)
    from .io import atomic_path

    with atomic_path(dst_path) as tmp:
        shutil.copyfile(src_path, tmp)
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


def _no_tpu_without_xla(cfg) -> None:
    common = cfg.common
    if common.tpu and common.bf16 and importlib.util.find_spec("torch_xla") is None:
        logging.getLogger("one_layer_lottery").info(
            "--bf16: torch_xla is not installed, so this is not a TPU run; training bf16 on %s",
            "the GPU" if torch.cuda.is_available() and not common.cpu else "the CPU")
        for name in cfg:  # fairseq copies the flag into other groups (distributed_training, optimizer)
            group = cfg[name]
            if hasattr(group, "keys") and "tpu" in group:
                group.tpu = False


def bf16_without_tpu() -> None:
    from fairseq.distributed import utils as distributed_utils

    original = distributed_utils.call_main
    if getattr(original, "_one_layer_lottery", False):
        return

    def call_main(cfg, main, **kwargs):
        _no_tpu_without_xla(cfg)
        return original(cfg, main, **kwargs)

    call_main._one_layer_lottery = True
    distributed_utils.call_main = call_main


def apply_fairseq_fixes() -> None:
    """The three fixes above; each is applied once."""
    allow_fairseq_checkpoints()
    atomic_checkpoint_copies()
    bf16_without_tpu()
