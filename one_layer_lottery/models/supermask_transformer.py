"""The (one-layer) supermask Transformer: fairseq's Transformer with frozen random
weights, learnable scores and a mask on every weight matrix.

We subclass fairseq's classes and override the builders (embeddings, encoder and
decoder layers, output projection); fairseq's own forward code runs unchanged.
"""

import argparse
import dataclasses
import os
import re
from typing import Optional

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.models import ARCH_CONFIG_REGISTRY, register_model
from fairseq.models.transformer import TransformerConfig, TransformerDecoderBase, TransformerEncoderBase
from fairseq.models.transformer.transformer_legacy import TransformerModel, base_architecture
from fairseq.modules import transformer_layer
from torch import nn

from ..errors import ConfigError, install_excepthook
from ..supermask import TiedOutputProjection
from .builders import SupermaskStack, anneal_, finish_, masked_linear, register_shaped_archs, token_embedding
from .options import Supermask, add_flags, as_namespace, defaults_, option_fields, record, supermask_of
from .pretrained import translation_tables

# set by our architectures; left None in the dataclass so that a Hydra config naming an architecture
# (model._name) gets that architecture's shape rather than the dataclass's base defaults
SHAPE_FIELDS = tuple(f"{side}_{name}" for side in ("encoder", "decoder")
                     for name in ("embed_dim", "ffn_embed_dim", "attention_heads", "layers")) + (
    "decoder_input_dim", "decoder_output_dim")  # these two default to the decoder's embed dim


def _flat_transformer_fields():
    """TransformerConfig's fields as the flat names its CLI flags use (encoder_embed_dim, ...)."""
    for f in dataclasses.fields(TransformerConfig):
        if f.name.startswith("_"):
            continue
        if dataclasses.is_dataclass(f.type):
            for sub in dataclasses.fields(f.type):
                if sub.name.startswith("_"):
                    continue
                default = sub.default
                if isinstance(default, str):
                    default = re.sub(r"model\.(encoder|decoder|quant_noise)\.", r"model.\1_", default)
                name = f"{f.name}_{sub.name}"
                if name in SHAPE_FIELDS:
                    yield name, Optional[int], dataclasses.field(default=None, metadata=sub.metadata)  # noqa: UP045
                else:
                    yield name, sub.type, dataclasses.field(default=default, metadata=sub.metadata)
        else:
            yield f.name, f.type, dataclasses.field(default=f.default, metadata=f.metadata)


# flat (not nested) so that fairseq's argparse -> omegaconf conversion keeps every flag
SupermaskTransformerConfig = dataclasses.make_dataclass(
    "SupermaskTransformerConfig",
    list(_flat_transformer_fields()) + [(f.name, f.type, f) for f in option_fields()],
    bases=(FairseqDataclass,),
)


def pretrained_in_checkpoint(args) -> bool:
    # the key without the underscore: checkpoints and artifacts written before it became a private field
    return bool(getattr(args, "_pretrained_embeddings_in_checkpoint", False)
                or getattr(args, "pretrained_embeddings_in_checkpoint", False))


@register_model("supermask_transformer", dataclass=SupermaskTransformerConfig)
class SupermaskTransformerModel(TransformerModel):
    """Transformer whose weights are frozen random tensors selected by learned masks."""

    task_name = "translation"  # the fairseq task an artifact of this family is used with
    expanded_use = "translate with fairseq-generate --user-dir one_layer_lottery"

    @classmethod
    def add_args(cls, parser):
        add_flags(parser, dataclasses.fields(SupermaskTransformerConfig))

    @classmethod
    def build_model(cls, cfg, task):
        install_excepthook()
        args = as_namespace(cfg)
        for name in SHAPE_FIELDS:
            if getattr(args, name, None) is None and hasattr(args, name):
                delattr(args, name)
        ARCH_CONFIG_REGISTRY.get(getattr(args, "_name", None) or getattr(args, "arch", None),
                                 base_supermask_architecture)(args)
        base_supermask_architecture(args)
        for name in SHAPE_FIELDS:
            record(cfg, name, getattr(args, name))
        sm = supermask_of(args, cfg)
        src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
        if args.share_all_embeddings:
            if src_dict != tgt_dict:
                raise ConfigError("--share-all-embeddings requires a joined dictionary")
            args.share_decoder_input_output_embed = True
        pretrained = (None, None)
        if args.pretrained_embeddings and pretrained_in_checkpoint(args):
            # the checkpoint being loaded holds the tables: shapes only, values come from its state dict
            pretrained = (torch.zeros(len(src_dict), args.encoder_embed_dim),
                          torch.zeros(len(tgt_dict), args.decoder_embed_dim))
        elif args.pretrained_embeddings:
            pretrained = translation_tables(args.pretrained_embeddings, src_dict, tgt_dict, args.encoder_embed_dim,
                                            args.decoder_embed_dim)
            record(cfg, "_pretrained_embeddings_in_checkpoint", True)
        mode = str(args.pretrained_embeddings_mode)
        encoder_embed = token_embedding(sm, src_dict, args.encoder_embed_dim, "encoder", pretrained[0], mode)
        decoder_embed = encoder_embed if args.share_all_embeddings else token_embedding(
            sm, tgt_dict, args.decoder_embed_dim, "decoder", pretrained[1], mode)
        tcfg = TransformerConfig.from_namespace(args)
        encoder = SupermaskTransformerEncoder(tcfg, src_dict, encoder_embed, sm)
        decoder = SupermaskTransformerDecoder(tcfg, tgt_dict, decoder_embed, sm)
        model = cls(args, encoder, decoder)
        model.supermask = sm
        return finish_(model, sm)

    def set_num_updates(self, num_updates):
        super().set_num_updates(num_updates)
        anneal_(self, self.supermask, num_updates)

    # ---- what this family knows about itself (the artifact, inspect and the CLI ask it) ----

    @classmethod
    def build_from_config(cls, model_cfg: dict, src_dict, tgt_dict, heads: dict | None = None):
        """The model of a saved config, over its dictionaries (source, target)."""
        task = argparse.Namespace(source_dictionary=src_dict, target_dictionary=tgt_dict)
        return cls.build_model(argparse.Namespace(**model_cfg), task)

    @classmethod
    def read_dictionaries(cls, task_cfg: dict, data: str):
        """(source dictionary, target dictionary, (source lang, target lang)) as the translation task loads them."""
        from fairseq.data import Dictionary
        from fairseq.data.data_utils import infer_language_pair

        src, tgt = task_cfg.get("source_lang"), task_cfg.get("target_lang")
        if not src or not tgt:
            src, tgt = infer_language_pair(data)
        paths = [cls.dictionary_file(data, lang) for lang in (src, tgt)]
        return Dictionary.load(paths[0]), Dictionary.load(paths[1]), (src, tgt)

    @staticmethod
    def dictionary_file(data: str, lang: str) -> str:
        path = os.path.join(data, f"dict.{lang}.txt")
        if not os.path.isfile(path):
            raise ConfigError(f"dictionary {path!r} does not exist")
        return path

    @staticmethod
    def dictionary_text(lang: str, text: str) -> str:
        """The text a dictionary of this language has on disk, given the model's own (the same for translation)."""
        return text

    @classmethod
    def dense_param_count(cls, cfg: dict, n_src: int, n_tgt: int) -> int:
        """Parameters of fairseq's dense Transformer of the same shape (biases and LayerNorms included)."""
        from fairseq.data import Dictionary

        def dictionary(n):
            d = Dictionary()
            for i in range(n - d.nspecial):
                d.add_symbol(f"w{i}")
            return d

        args = argparse.Namespace(**{k: v for k, v in cfg.items() if k in SHAPE_FIELDS or k.startswith("share_")})
        base_architecture(args)
        task = argparse.Namespace(source_dictionary=dictionary(n_src), target_dictionary=dictionary(n_tgt))
        if args.share_all_embeddings:
            task.target_dictionary = task.source_dictionary
        with torch.device("meta"):
            model = TransformerModel.build_model(args, task)
        return sum(p.numel() for p in model.parameters())

    @classmethod
    def vocab_sizes(cls, masks: dict, meta: dict) -> tuple[int, int]:
        """(source, target) vocabulary sizes from an artifact's dictionaries or a checkpoint's masks."""
        from ..artifact import dictionary_from_text

        if "dicts" in meta:
            return len(dictionary_from_text(meta["dicts"]["src"])), len(dictionary_from_text(meta["dicts"]["tgt"]))
        src = masks.get("encoder.embed_tokens")
        tgt = masks.get("decoder.embed_tokens", masks.get("decoder.output_projection"))
        if src is None or tgt is None:
            raise ConfigError("cannot tell the vocabulary sizes of a checkpoint with pre-trained embeddings; "
                              "inspect its exported artifact instead")
        return src.shape[0], tgt.shape[0]

    @staticmethod
    def heads_in_state(sd: dict) -> dict:
        return {}  # translation models have no classification heads

    def classification_heads_shape(self) -> dict:
        return {}


class SupermaskTransformerEncoder(SupermaskStack, TransformerEncoderBase):
    def __init__(self, cfg, dictionary, embed_tokens, supermask: Supermask):
        self.supermask = supermask  # before fairseq's __init__, which builds the layers
        super().__init__(cfg, dictionary, embed_tokens)
        self._supermask_rest("encoder")

    def build_encoder_layer(self, cfg):
        return self._supermask_layer(transformer_layer.TransformerEncoderLayerBase(cfg), "encoder")


class SupermaskTransformerDecoder(SupermaskStack, TransformerDecoderBase):
    def __init__(self, cfg, dictionary, embed_tokens, supermask: Supermask, no_encoder_attn=False):
        self.supermask = supermask  # before fairseq's __init__, which builds the layers and the output projection
        super().__init__(cfg, dictionary, embed_tokens, no_encoder_attn=no_encoder_attn)
        self._supermask_rest("decoder")
        # an output temperature: lets a small random output table make confident logits
        self.output_scale = nn.Parameter(torch.ones(())) if supermask.learned_output_scale else None

    def output_layer(self, features):
        logits = super().output_layer(features)
        return logits if self.output_scale is None else logits * self.output_scale

    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        return self._supermask_layer(transformer_layer.TransformerDecoderLayerBase(cfg, no_encoder_attn), "decoder")

    def upgrade_state_dict_named(self, state_dict, name):
        # fairseq copies a tied embedding table to output_projection.weight; ours reads the table itself
        key = f"{name}.output_projection.weight"
        had = key in state_dict
        state_dict = super().upgrade_state_dict_named(state_dict, name)
        if not had and isinstance(self.output_projection, TiedOutputProjection):
            state_dict.pop(key, None)
        return state_dict

    def build_output_projection(self, cfg, dictionary, embed_tokens):
        if self.share_input_output_embed:
            self.output_projection = TiedOutputProjection(embed_tokens)
            return
        self.output_projection = masked_linear(self.supermask, "decoder.output_projection", self.output_embed_dim,
                                               len(dictionary), "output")


# ---- architectures -------------------------------------------------------------------------

def base_supermask_architecture(args) -> None:
    defaults_(args)
    base_architecture(args)


ARCHS = {
    # name: (encoder/decoder layers, embed dim, ffn dim, heads)  -- DESIGN.md, Table 1 of the paper
    "iwslt_de_en": (6, 512, 1024, 4),
    "iwslt_de_en_wide": (6, 1024, 2048, 4),
    "iwslt_de_en_deep": (12, 512, 1024, 4),
    "wmt_en_de": (6, 512, 2048, 8),
    "wmt_en_de_wider": (6, 1024, 4096, 16),
    "wmt_en_de_deeper": (12, 512, 2048, 8),
    "tiny": (2, 64, 128, 2),
    # what the authors' "wider" WMT command builds: their masked_transformer_wmt_en_de_big calls a function name
    # defined twice in their file, and the second definition (1536/6144/24 heads) is the one that runs
    "wmt_en_de_wider_authors": (6, 1536, 6144, 24),
}


register_shaped_archs("supermask_transformer", "supermask_transformer", ARCHS, ("encoder", "decoder"),
                      base_supermask_architecture)
