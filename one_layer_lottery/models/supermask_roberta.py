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
import os

import torch
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import register_model
from fairseq.models.roberta.model import RobertaEncoder, RobertaModel
from fairseq.models.roberta.model import base_architecture as roberta_base_architecture
from fairseq.models.transformer import TransformerConfig
from torch import nn

from ..errors import ConfigError
from ..init import generate_weight, role_specs
from ..optim.masked_only import track_model
from ..supermask import MaskedLinear, group_masks_
from .supermask_transformer import (
    SupermaskOptions,
    SupermaskTransformerEncoder,
    _record,
    annealed_set_num_updates,
    build_token_embedding,
    compare_dictionary,
    mask_rule,
    read_pretrained,
    register_shaped_archs,
    resolve_weight_seed,
    scale_layer_scores_,
    validate,
)

HEADS = ("trained", "masked")
TOKENS_KEY = "encoder.sentence_encoder.embed_tokens.weight"
POSITIONS_KEY = "encoder.sentence_encoder.embed_positions.weight"


class MaskedClassificationHead(nn.Module):
    """RoBERTa's head (first token -> dense -> tanh -> out_proj) on random masked weights, no biases."""

    def __init__(self, cfg, name: str, input_dim: int, inner_dim: int, num_classes: int, pooler_dropout: float):
        super().__init__()

        def masked(prefix, fan_in, fan_out, role):
            w = generate_weight(cfg.weight_seed, f"classification_heads.{name}.{prefix}", (fan_out, fan_in),
                                cfg.init_specs[role])
            return MaskedLinear(fan_in, fan_out, cfg.rule, str(cfg.score_init), weight=w)

        self.dense = masked("dense", input_dim, inner_dim, "ffn")
        self.out_proj = masked("out_proj", inner_dim, num_classes, "output")
        self.dropout = nn.Dropout(p=pooler_dropout)

    def forward(self, features, **kwargs):
        x = self.dropout(features[:, 0, :])
        x = self.dropout(torch.tanh(self.dense(x)))
        return self.out_proj(x)


class SupermaskRobertaEncoder(RobertaEncoder):
    """RoBERTa's encoder with a supermask Transformer inside and no masked-LM head (a classifier)."""

    def build_embedding(self, vocab_size, embedding_dim, padding_idx):
        tables = self.args.pretrained_tables
        return build_token_embedding(self.args, self.dictionary, embedding_dim, "encoder",
                                     tables[0] if tables is not None else None)

    def build_encoder(self, args, dictionary, embed_tokens):
        return SupermaskTransformerEncoder(TransformerConfig.from_namespace(args), dictionary, embed_tokens)

    def build_lm_head(self, embed_dim, output_dim, activation_fn, weight):
        return None  # sentence classification only: masked-LM pre-training is the dense model's job

    def output_layer(self, features, masked_tokens=None, **unused):
        raise ConfigError("supermask RoBERTa models are classifiers (--task sentence_prediction); they have no "
                          "masked-LM head")


@register_model("supermask_roberta")
class SupermaskRobertaModel(RobertaModel):
    """RoBERTa classifier whose encoder weights are frozen random tensors selected by learned masks."""

    @staticmethod
    def add_args(parser):
        RobertaModel.add_args(parser)
        gen_parser_from_dataclass(parser, SupermaskOptions(), delete_default=True, with_prefix="")
        parser.add_argument("--classification-head", choices=HEADS,
                            help="trained (default: dense + out_proj with biases, as the authors' code and RoBERTa "
                                 "fine-tuning) or masked (random and masked: nothing but masks learned)")

    def __init__(self, args, encoder):
        super().__init__(args, encoder)
        # RobertaModel re-initialises every nn.Embedding and nn.Linear the BERT way; what is frozen comes back
        tables = args.pretrained_tables
        if tables is not None and tables[1] is not None:
            positions = self.encoder.sentence_encoder.embed_positions
            positions.weight.data.copy_(tables[1])
            positions.weight.requires_grad_(False)

    @classmethod
    def build_model(cls, cfg, task):
        from omegaconf import OmegaConf

        args = argparse.Namespace(**(OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg)
                                     else vars(cfg)))  # our resolved values stay out of the saved config
        base_supermask_roberta_architecture(args)
        if not hasattr(args, "max_positions"):
            args.max_positions = getattr(args, "tokens_per_sample", None) or task.max_positions()
        validate(args)
        if str(args.classification_head) not in HEADS:
            raise ConfigError(f"--classification-head {args.classification_head!r} is unknown; allowed: "
                              f"{', '.join(HEADS)}")
        resolve_weight_seed(args, cfg)
        args.init_specs, args.rule = role_specs(args), mask_rule(args)
        dictionary = task.source_dictionary
        args.pretrained_tables = None
        if args.pretrained_embeddings:
            # learned positions, as RoBERTa's; from the checkpoint being loaded, or from the RoBERTa file
            args.encoder_learned_pos = True
            _record(cfg, "encoder_learned_pos", True)
            n_pos = args.max_positions + dictionary.pad() + 1
            if args.pretrained_embeddings_in_checkpoint:
                args.pretrained_tables = (torch.zeros(len(dictionary), args.encoder_embed_dim), None)
            else:
                args.pretrained_tables = load_roberta_embeddings(args.pretrained_embeddings, dictionary,
                                                                 args.encoder_embed_dim, n_pos)
                _record(cfg, "pretrained_embeddings_in_checkpoint", True)
            if str(args.pretrained_embeddings_mode) != "frozen":
                raise ConfigError("--pretrained-embeddings-mode masked is not offered for RoBERTa models: the paper "
                                  "uses RoBERTa's embedding layer as it is (frozen)")
        model = cls(args, SupermaskRobertaEncoder(args, dictionary))
        if args.pretrained_tables is not None:
            model.encoder.sentence_encoder.embed_positions.weight.requires_grad_(False)
        scale_layer_scores_(model, args)
        group_masks_(model)
        track_model(model)
        return model

    def register_classification_head(self, name, num_classes=None, inner_dim=None, **kwargs):
        if str(self.args.classification_head) == "trained":
            return super().register_classification_head(name, num_classes, inner_dim, **kwargs)
        self.classification_heads[name] = MaskedClassificationHead(
            self.args, name, self.args.encoder_embed_dim, inner_dim or self.args.encoder_embed_dim, num_classes,
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
        annealed_set_num_updates(self, self.args, num_updates)


def load_roberta_embeddings(path: str, dictionary, dim: int, n_positions: int):
    """(token table, position table) of a fairseq RoBERTa checkpoint, checked against our dictionary and shape."""
    state = read_pretrained(path)
    model = {k.replace("decoder.sentence_encoder.", "encoder.sentence_encoder.", 1): v
             for k, v in state["model"].items()}
    if TOKENS_KEY not in model:
        kind = "a translation checkpoint" if "decoder.embed_tokens.weight" in model else "not a RoBERTa checkpoint"
        raise ConfigError(f"--pretrained-embeddings {path!r} has no {TOKENS_KEY}: {kind}; give a fairseq RoBERTa "
                          f"checkpoint (e.g. roberta.base/model.pt)")
    tokens = model[TOKENS_KEY].float()
    if tokens.shape[1] != dim:
        raise ConfigError(f"--pretrained-embeddings {path!r}: embedding dim is {tokens.shape[1]}, the model's is "
                          f"{dim}; they must match (choose the architecture of that size)")
    if tokens.shape[0] != len(dictionary):
        raise ConfigError(f"--pretrained-embeddings {path!r}: its table has {tokens.shape[0]} rows, the dictionary "
                          f"{len(dictionary)} symbols; prepare the data with that model's BPE and dict.txt")
    _check_dictionary(path, state, dictionary)
    positions = model.get(POSITIONS_KEY)
    if positions is None or tuple(positions.shape) != (n_positions, dim):
        have = "none" if positions is None else "x".join(map(str, positions.shape))
        raise ConfigError(f"--pretrained-embeddings {path!r}: position table {have}, the model needs "
                          f"{n_positions}x{dim} (--max-positions {n_positions - dictionary.pad() - 1})")
    return tokens.clone(), positions.float().clone()


def _check_dictionary(path: str, state: dict, dictionary) -> None:
    """Where the checkpoint's data directory is readable, its dictionary must equal ours symbol for symbol."""
    task = (state.get("cfg") or {}).get("task") or {}
    data = str(task.get("data") or "").split(os.pathsep)[0]
    for candidate in (os.path.join(data, "dict.txt"), os.path.join(data, "input0", "dict.txt")):
        if data and os.path.isfile(candidate):
            compare_dictionary(path, candidate, dictionary)
            return


def base_supermask_roberta_architecture(args) -> None:
    import dataclasses

    for f in dataclasses.fields(SupermaskOptions):
        if not hasattr(args, f.name) or getattr(args, f.name) is None and f.default is not None:
            setattr(args, f.name, f.default)
    if getattr(args, "layer_score_lr_scale", None) is None:
        # one label a sentence gives the layers' scores noisy gradients: at the translation lr their masks
        # churn and the classifier stays at the majority class (README, "Sentence classification")
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
