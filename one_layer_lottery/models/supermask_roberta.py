"""The (one-layer) supermask RoBERTa: fairseq's RoBERTa sentence classifier whose encoder is our supermask
Transformer encoder (Shen et al. 2021, Figs. 6-7: QQP and MNLI).

We subclass fairseq's RobertaModel and RobertaEncoder and override their builders (embeddings, encoder,
LM head, classification head); fairseq's `sentence_prediction` task and criterion run unchanged.

What is trained: the scores of every masked weight, and the classification head (dense + out_proj with biases,
as in the authors' code and stock RoBERTa fine-tuning); `--classification-head masked` makes the head random
and masked too, so that nothing but masks is learned. Position embeddings: sinusoidal (nothing to learn) on
random embeddings; with `--pretrained-embeddings ROBERTA.pt`, RoBERTa's token and position tables, frozen
(the paper's setting: "the pre-trained embedding layer of RoBERTa").
"""

import argparse
import dataclasses
import os
import re

import torch
from fairseq.models import register_model
from fairseq.models.roberta.model import RobertaEncoder, RobertaModel
from fairseq.models.roberta.model import base_architecture as roberta_base_architecture
from fairseq.models.transformer import TransformerConfig
from torch import nn

from ..errors import ConfigError, install_excepthook
from ..io import read_checkpoint
from ..supermask import group_masks_
from .builders import anneal_, finish_, masked_linear, register_shaped_archs, token_embedding
from .options import SupermaskOptions, add_flags, as_namespace, defaults_, record, supermask_of
from .pretrained import compare_dictionary, read_table
from .supermask_transformer import SupermaskTransformerEncoder, pretrained_in_checkpoint

HEADS = ("trained", "masked")
TOKENS_KEY = "encoder.sentence_encoder.embed_tokens.weight"
POSITIONS_KEY = "encoder.sentence_encoder.embed_positions.weight"


@dataclasses.dataclass
class SupermaskRobertaOptions(SupermaskOptions):
    """The RoBERTa classifier's options on top of the supermask ones (fairseq's RoBERTa flags come with them)."""

    classification_head: str = dataclasses.field(
        default="trained", metadata={"help": "trained (dense + out_proj with biases, as the authors' code and RoBERTa "
                                             "fine-tuning) or masked (random and masked: nothing but masks learned)"})


class MaskedClassificationHead(nn.Module):
    """RoBERTa's head (first token -> dense -> tanh -> out_proj) on random masked weights, no biases."""

    def __init__(self, sm, name: str, input_dim: int, inner_dim: int, num_classes: int, pooler_dropout: float):
        super().__init__()
        self.dense = masked_linear(sm, f"classification_heads.{name}.dense", input_dim, inner_dim, "ffn")
        self.out_proj = masked_linear(sm, f"classification_heads.{name}.out_proj", inner_dim, num_classes, "output")
        self.dropout = nn.Dropout(p=pooler_dropout)

    def forward(self, features, **kwargs):
        x = self.dropout(features[:, 0, :])
        x = self.dropout(torch.tanh(self.dense(x)))
        return self.out_proj(x)


class SupermaskRobertaEncoder(RobertaEncoder):
    """RoBERTa's encoder with a supermask Transformer inside and no masked-LM head (a classifier)."""

    def __init__(self, args, dictionary, supermask, tables):
        self.supermask, self.tables = supermask, tables  # before fairseq's __init__, which calls the builders
        super().__init__(args, dictionary)

    def build_embedding(self, vocab_size, embedding_dim, padding_idx):
        return token_embedding(self.supermask, self.dictionary, embedding_dim, "encoder",
                               self.tables[0] if self.tables is not None else None)

    def build_encoder(self, args, dictionary, embed_tokens):
        return SupermaskTransformerEncoder(TransformerConfig.from_namespace(args), dictionary, embed_tokens,
                                           self.supermask)

    def build_lm_head(self, embed_dim, output_dim, activation_fn, weight):
        return None  # sentence classification only: masked-LM pre-training is the dense model's job

    def output_layer(self, features, masked_tokens=None, **unused):
        raise ConfigError("supermask RoBERTa models are classifiers (--task sentence_prediction); they have no "
                          "masked-LM head")


@register_model("supermask_roberta")
class SupermaskRobertaModel(RobertaModel):
    """RoBERTa classifier whose encoder weights are frozen random tensors selected by learned masks."""

    task_name = "sentence_prediction"  # the fairseq task an artifact of this family is used with
    expanded_use = "classify with one-layer-lottery classify"

    @staticmethod
    def add_args(parser):
        RobertaModel.add_args(parser)
        add_flags(parser, dataclasses.fields(SupermaskRobertaOptions))

    def __init__(self, args, encoder, supermask=None):
        super().__init__(args, encoder)
        self.supermask = supermask
        # RobertaModel re-initialises every nn.Embedding and nn.Linear the BERT way; what is frozen comes back
        tables = encoder.tables
        if tables is not None and tables[1] is not None:
            positions = self.encoder.sentence_encoder.embed_positions
            positions.weight.data.copy_(tables[1])
            positions.weight.requires_grad_(False)

    @classmethod
    def build_model(cls, cfg, task):
        install_excepthook()
        args = as_namespace(cfg)  # our resolved values stay out of the saved config
        base_supermask_roberta_architecture(args)
        if not hasattr(args, "max_positions"):
            args.max_positions = getattr(args, "tokens_per_sample", None) or task.max_positions()
        if str(args.classification_head) not in HEADS:
            raise ConfigError(f"--classification-head {args.classification_head!r} is unknown; allowed: "
                              f"{', '.join(HEADS)}")
        sm = supermask_of(args, cfg, default_layer_score_lr_scale=0.1)
        tables = cls.pretrained_tables(args, cfg, task.source_dictionary)
        model = cls(args, SupermaskRobertaEncoder(args, task.source_dictionary, sm, tables), sm)
        if tables is not None:
            model.encoder.sentence_encoder.embed_positions.weight.requires_grad_(False)
        return finish_(model, sm)

    @staticmethod
    def pretrained_tables(args, cfg, dictionary):
        """(token table, position table) of --pretrained-embeddings (RoBERTa's, frozen), or None."""
        if not args.pretrained_embeddings:
            return None
        if str(args.pretrained_embeddings_mode) != "frozen":
            raise ConfigError("--pretrained-embeddings-mode masked is not offered for RoBERTa models: the paper "
                              "uses RoBERTa's embedding layer as it is (frozen)")
        # learned positions, as RoBERTa's; from the checkpoint being loaded, or from the RoBERTa file
        args.encoder_learned_pos = True
        record(cfg, "encoder_learned_pos", True)
        if pretrained_in_checkpoint(args):
            return torch.zeros(len(dictionary), args.encoder_embed_dim), None
        n_pos = args.max_positions + dictionary.pad() + 1
        tables = load_roberta_embeddings(args.pretrained_embeddings, dictionary, args.encoder_embed_dim, n_pos)
        record(cfg, "_pretrained_embeddings_in_checkpoint", True)
        return tables

    def register_classification_head(self, name, num_classes=None, inner_dim=None, **kwargs):
        if str(self.args.classification_head) == "trained":
            return super().register_classification_head(name, num_classes, inner_dim, **kwargs)
        self.classification_heads[name] = MaskedClassificationHead(
            self.supermask, name, self.args.encoder_embed_dim, inner_dim or self.args.encoder_embed_dim, num_classes,
            self.args.pooler_dropout)
        group_masks_(self)

    def upgrade_state_dict_named(self, state_dict, name):
        # fairseq's version reads each head's out_proj.weight; a masked head has scores and a frozen weight instead
        prefix = f"{name}.classification_heads." if name else "classification_heads."
        heads = {k: state_dict.pop(k) for k in list(state_dict)
                 if k.startswith(prefix) and str(self.args.classification_head) == "masked"}
        super().upgrade_state_dict_named(state_dict, name)
        state_dict.update(heads)

    def trained_besides_scores(self) -> tuple[str, ...]:
        """Name prefixes of the tensors a masked-only optimizer may train beside scores: the trained head."""
        out = ("classification_heads.",) if str(self.args.classification_head) == "trained" else ()
        positions = getattr(self.encoder.sentence_encoder.embed_positions, "weight", None)
        if positions is not None and positions.requires_grad:  # --encoder-learned-pos on random embeddings
            out += ("encoder.sentence_encoder.embed_positions.",)
        return out

    def set_num_updates(self, num_updates):
        super().set_num_updates(num_updates)
        anneal_(self, self.supermask, num_updates)

    # ---- what this family knows about itself (the artifact, inspect and the CLI ask it) ----

    @classmethod
    def build_from_config(cls, model_cfg: dict, src_dict, tgt_dict, heads: dict | None = None):
        """The classifier of a saved config over its input and label dictionaries; `heads` {name: [classes, inner
        dim]}."""
        task = argparse.Namespace(source_dictionary=src_dict, label_dictionary=tgt_dict,
                                  max_positions=lambda: model_cfg.get("max_positions", 512))
        model = cls.build_model(argparse.Namespace(**model_cfg), task)
        for name, (classes, inner) in (heads or {}).items():
            model.register_classification_head(name, num_classes=classes, inner_dim=inner)
        return model

    @classmethod
    def read_dictionaries(cls, task_cfg: dict, data: str):
        """(input dictionary, label dictionary, ("input0", "label")) as the sentence_prediction task loads them."""
        from fairseq.data import Dictionary
        from fairseq.tasks.sentence_prediction import SentencePredictionTask

        paths = [cls.dictionary_file(data, sub) for sub in ("input0", "label")]
        return SentencePredictionTask.load_dictionary(paths[0]), Dictionary.load(paths[1]), ("input0", "label")

    @staticmethod
    def dictionary_file(data: str, lang: str) -> str:
        path = os.path.join(data, lang, "dict.txt")
        if not os.path.isfile(path):
            raise ConfigError(f"dictionary {path!r} does not exist")
        return path

    @staticmethod
    def dictionary_text(lang: str, text: str) -> str:
        """The text a dictionary has on disk, given the model's own: the task adds <mask> to input0's when it loads
        the file."""
        return text.removesuffix("<mask> 1\n") if lang == "input0" else text

    @classmethod
    def dense_param_count(cls, cfg: dict, n_src: int, n_tgt: int) -> int:
        """Parameters of RoBERTa's dense encoder of the same shape with one classification head of n_tgt labels (no
        masked-LM head); counted, since building RoBERTa re-initialises every weight (slow)."""
        layers, d, f = (int(cfg.get(k) or 0) for k in ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim"))
        positions = int(cfg.get("max_positions") or 512) + 2  # learned, past the padding index
        per_layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 2 * 2 * d
        return n_src * d + positions * d + 2 * d + layers * per_layer + (d * d + d) + (d * n_tgt + n_tgt)

    @classmethod
    def vocab_sizes(cls, masks: dict, meta: dict) -> tuple[int, int]:
        """(input vocabulary, the classes of the first head) from an artifact's metadata or a checkpoint's."""
        from ..artifact import dictionary_from_text

        heads = list((meta.get("heads") or {}).values())
        rows = len(dictionary_from_text(meta["dicts"]["src"])) if "dicts" in meta else meta.get("input_rows")
        return rows, heads[0][0] if heads else 2

    @staticmethod
    def heads_in_state(sd: dict) -> dict:
        """{name: [classes, inner dim]} of the classification heads a state dict holds."""
        out = {}
        for k, v in sd.items():
            m = re.match(r"^classification_heads\.([^.]+)\.(dense|out_proj)\.(?:weight|scores)$", k)
            if m:
                out.setdefault(m[1], [0, 0])[0 if m[2] == "out_proj" else 1] = v.shape[0]
        return out

    def classification_heads_shape(self) -> dict:
        """{name: [classes, inner dim]} of the heads, which an artifact records to rebuild them."""
        return {n: [h.out_proj.out_features, h.dense.out_features] for n, h in self.classification_heads.items()}


def load_roberta_embeddings(path: str, dictionary, dim: int, n_positions: int):
    """(token table, position table) of a fairseq RoBERTa checkpoint, checked against our dictionary and shape."""
    state = read_checkpoint(path, "--pretrained-embeddings")
    model = {k.replace("decoder.sentence_encoder.", "encoder.sentence_encoder.", 1): v
             for k, v in state["model"].items()}
    if TOKENS_KEY not in model:
        kind = "a translation checkpoint" if "decoder.embed_tokens.weight" in model else "not a RoBERTa checkpoint"
        raise ConfigError(f"--pretrained-embeddings {path!r} has no {TOKENS_KEY}: {kind}; give a fairseq RoBERTa "
                          f"checkpoint (e.g. roberta.base/model.pt)")
    tokens = read_table(path, {"model": model}, TOKENS_KEY, dictionary, dim)
    _check_dictionary(path, state, dictionary)
    positions = model.get(POSITIONS_KEY)
    if positions is None or tuple(positions.shape) != (n_positions, dim):
        have = "none" if positions is None else "x".join(map(str, positions.shape))
        raise ConfigError(f"--pretrained-embeddings {path!r}: position table {have}, the model needs "
                          f"{n_positions}x{dim} (--max-positions {n_positions - dictionary.pad() - 1})")
    return tokens, positions.float().clone()


def _check_dictionary(path: str, state: dict, dictionary) -> None:
    """Where the checkpoint's data directory is readable, its dictionary must equal ours symbol for symbol."""
    task = (state.get("cfg") or {}).get("task") or {}
    data = str(task.get("data") or "").split(os.pathsep)[0]
    for candidate in (os.path.join(data, "dict.txt"), os.path.join(data, "input0", "dict.txt")):
        if data and os.path.isfile(candidate):
            compare_dictionary(path, candidate, dictionary)
            return


def base_supermask_roberta_architecture(args) -> None:
    defaults_(args)
    if getattr(args, "layer_score_lr_scale", None) is None:
        # one label a sentence gives the layers' scores noisy gradients: at the translation lr their masks
        # churn and the classifier stays at the majority class (docs/classification.md)
        args.layer_score_lr_scale = 0.1
    if getattr(args, "classification_head", None) is None:
        args.classification_head = "trained"
    if getattr(args, "encoder_learned_pos", None) is None:
        args.encoder_learned_pos = False  # sinusoidal: random embeddings learn nothing but masks
    roberta_base_architecture(args)


ROBERTA_ARCHS = {  # name: (layers, embed dim, ffn dim, heads): RoBERTa base and large (Liu et al. 2019)
    "base": (12, 768, 3072, 12),
    "large": (24, 1024, 4096, 16),
    "tiny": (2, 64, 128, 2),
}


register_shaped_archs("supermask_roberta", "supermask_roberta", ROBERTA_ARCHS, ("encoder",),
                      base_supermask_roberta_architecture)
