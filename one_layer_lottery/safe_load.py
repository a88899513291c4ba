"""Let torch>=2.6's weights_only loading read fairseq checkpoints: an allow-list, never weights_only=False."""

import argparse

import torch

# fairseq pickles its legacy (argparse) model configs, e.g. cfg.model of the dense `transformer`
FAIRSEQ_SAFE_GLOBALS = [argparse.Namespace]


def allow_fairseq_checkpoints() -> None:
    torch.serialization.add_safe_globals(FAIRSEQ_SAFE_GLOBALS)
