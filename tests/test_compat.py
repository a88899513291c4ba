"""Importing the user-dir registers things and applies the three documented fairseq fixes; nothing else changes."""

import subprocess
import sys

PROBE = r"""
import sys
import torch
import torch.optim.optimizer as optimizer
from fairseq import checkpoint_utils, options, trainer
from fairseq.distributed import utils as distributed_utils
from fairseq.file_io import PathManager
from fairseq.models.transformer import transformer_legacy
from fairseq.models.roberta import model as roberta

def snapshot():
    classes = {c: dict(vars(c)) for c in (transformer_legacy.TransformerModel, roberta.RobertaModel,
                                          trainer.Trainer, PathManager)}
    return {"classes": classes, "load": checkpoint_utils.load_checkpoint, "call_main": distributed_utils.call_main,
            "parse": options.parse_args_and_arch, "hook": sys.excepthook,
            "step_hooks": dict(optimizer._global_optimizer_post_hooks),
            "pre_hooks": dict(optimizer._global_optimizer_pre_hooks)}

before = snapshot()
import one_layer_lottery  # noqa: E402
after = snapshot()
changed = []
for c, attrs in before["classes"].items():
    for k in set(attrs) | set(after["classes"][c]):
        if attrs.get(k) is not after["classes"][c].get(k):
            changed.append(f"{c.__name__}.{k}")
for k in ("load", "call_main", "parse", "hook"):
    if before[k] is not after[k]:
        changed.append(k)
for k in ("step_hooks", "pre_hooks"):
    if before[k] != after[k]:
        changed.append(k)
print(sorted(changed))
print(torch.serialization.get_safe_globals())
"""


def test_import_changes_only_the_documented_fixes():
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    changed, safe = r.stdout.strip().splitlines()[-2:]
    # the atomic checkpoint copy and the --bf16 call_main fix; no class, loader, hook or optimizer hook besides
    assert changed == "['PathManager.copy', 'call_main']"
    assert "argparse.Namespace" in safe and "numpy" in safe
