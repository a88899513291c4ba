"""The seed-plus-bits model artifact: export, load, expand.

A supermask model is a pure function of (config, weight seed, masks, frozen pre-trained
embeddings, dictionaries). The artifact is one safetensors file (no pickle: loading runs
no code) holding exactly that: every mask packed 1 bit per weight, the embeddings in
fp16 (or fp32), and the config and dictionaries as JSON metadata. The random weights are
not stored; they are regenerated from the seed and checked at export time.
"""

import argparse
import json
import math
import os
import re
import tempfile

import numpy as np
import torch

from . import masks
from .errors import ConfigError
from .supermask import FrozenEmbedding, SupermaskModule

FORMAT = "one_layer_lottery.artifact"
FORMAT_VERSION = 3  # 3: multicoated or N:M-packed masks (written only by such models; others still write 2)
# 2: per-role inits (the config names its init preset); 1 is read as before
READS = (1, 2, 3)
_META_KEY = "one_layer_lottery"
_WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _dict_text(d) -> str:
    return "".join(f"{s} {c}\n" for s, c in zip(d.symbols[d.nspecial:], d.count[d.nspecial:]))


def _dict_from_text(text: str):
    import io

    from fairseq.data import Dictionary

    d = Dictionary()
    d.add_from_file(io.StringIO(text))
    return d


def mask_of(meta: dict, tensors: dict, name: str) -> np.ndarray:
    """The (outer) boolean mask of one module, flat, as the artifact stores it."""
    return masks.outer_mask(meta, tensors, name, math.prod(meta["masks"][name]))


def _is_regenerated(key: str) -> bool:
    return key.endswith((".frozen_weight", ".version")) or ".shared_layer_weights." in key


FAMILIES = ("supermask_transformer", "supermask_roberta")


def family(model_cfg: dict) -> str:
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    return ARCH_MODEL_NAME_REGISTRY.get(model_cfg.get("_name") or model_cfg.get("arch"))


def _build(model_cfg: dict, src_dict, tgt_dict, heads: dict | None = None):
    """The model of a config: a translation model (source, target dictionaries) or a RoBERTa classifier (input,
    label dictionaries; `heads` {name: [classes, inner dim]})."""
    from .models.supermask_roberta import SupermaskRobertaModel
    from .models.supermask_transformer import SupermaskTransformerModel

    if family(model_cfg) == "supermask_roberta":
        task = argparse.Namespace(source_dictionary=src_dict, label_dictionary=tgt_dict,
                                  max_positions=lambda: model_cfg.get("max_positions", 512))
        model = SupermaskRobertaModel.build_model(argparse.Namespace(**model_cfg), task)
        for name, (classes, inner) in (heads or {}).items():
            model.register_classification_head(name, num_classes=classes, inner_dim=inner)
        return model
    task = argparse.Namespace(source_dictionary=src_dict, target_dictionary=tgt_dict)
    if "init_preset" not in model_cfg:
        # written before per-role inits: one --weight-init for every tensor, scaled unless --no-scale-init
        old = model_cfg.get("weight_init") or "kaiming_uniform"
        model_cfg = {**model_cfg, "init_preset": "paper", "weight_init": old, "embed_init": old, "output_init": old}
    return SupermaskTransformerModel.build_model(argparse.Namespace(**model_cfg), task)


def heads_of(model) -> dict:
    """{name: [classes, inner dim]} of a classifier's heads ({} for translation models)."""
    return {n: [h.out_proj.out_features, h.dense.out_features]
            for n, h in getattr(model, "classification_heads", {}).items()}


def _heads_in_state(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        m = re.match(r"^classification_heads\.([^.]+)\.(dense|out_proj)\.(?:weight|scores)$", k)
        if m:
            out.setdefault(m[1], [0, 0])[0 if m[2] == "out_proj" else 1] = v.shape[0]
    return out


def _check_supermask_cfg(cfg: dict, where: str) -> dict:
    model_cfg = (cfg or {}).get("model") if isinstance(cfg, dict) else None
    if isinstance(model_cfg, argparse.Namespace):  # fairseq's legacy models pickle their args
        model_cfg = vars(model_cfg)
    name = model_cfg.get("_name") or model_cfg.get("arch") if isinstance(model_cfg, dict) else None
    if not isinstance(model_cfg, dict) or family(model_cfg) not in FAMILIES:
        raise ConfigError(f"{where} is not a supermask model (architecture {name!r}); "
                          f"export takes checkpoints of the supermask_transformer and supermask_roberta "
                          f"architectures")
    return dict(model_cfg)


def load_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"checkpoint {path!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state["model"]
    except Exception as e:  # noqa: BLE001 - truncated, corrupt or foreign files are one user error
        raise ConfigError(f"checkpoint {path!r} is not a readable fairseq checkpoint ({type(e).__name__})") from None
    return state


def load_dictionaries(cfg: dict, data: str | None):
    """(source or input dictionary, target or label dictionary, their names) as the checkpoint's task loads them."""
    from fairseq.data import Dictionary
    from fairseq.data.data_utils import infer_language_pair

    task = cfg.get("task") or {}
    data = data or str(task.get("data") or "").split(os.pathsep)[0]
    if not data or not os.path.isdir(data):
        raise ConfigError(f"the dictionaries are not in the checkpoint and data directory {data!r} does not exist; "
                          f"pass --data DATA_BIN")
    if task.get("_name") == "sentence_prediction":
        from fairseq.tasks.sentence_prediction import SentencePredictionTask

        paths = [os.path.join(data, sub, "dict.txt") for sub in ("input0", "label")]
        for p in paths:
            if not os.path.isfile(p):
                raise ConfigError(f"dictionary {p!r} does not exist")
        return SentencePredictionTask.load_dictionary(paths[0]), Dictionary.load(paths[1]), ("input0", "label")
    src, tgt = task.get("source_lang"), task.get("target_lang")
    if not src or not tgt:
        src, tgt = infer_language_pair(data)
    paths = [os.path.join(data, f"dict.{lang}.txt") for lang in (src, tgt)]
    for p in paths:
        if not os.path.isfile(p):
            raise ConfigError(f"dictionary {p!r} does not exist")
    return Dictionary.load(paths[0]), Dictionary.load(paths[1]), (src, tgt)


def _pack_masks(model) -> tuple[dict, dict, dict]:
    """(packed mask tensors, {module: shape}, the rules' metadata entries, e.g. {"coats": {module: 2}})."""
    tensors, shapes, packing = {}, {}, {}
    for name, m in model.named_modules():
        if isinstance(m, SupermaskModule):
            shapes[name] = list(m.scores.shape)
            packed, entries = m.rule.pack(name, m.scores, m.mask())
            tensors.update(packed)
            for key, value in entries.items():
                packing.setdefault(key, {}).update(value)
    return tensors, shapes, packing


def export_model(model, cfg: dict, src_dict, tgt_dict, out: str, langs=("src", "tgt"),
                 embeddings_dtype: str = "float16", weights_dtype: str = "float32") -> dict[str, int]:
    """Write the artifact of a built supermask model; returns its size and the floor.

    `weights_dtype` is the precision the random weights were trained in (float16 after --fp16,
    bfloat16 after --bf16): loading rounds the regenerated weights to it.
    """
    from safetensors.torch import save_file

    if embeddings_dtype not in ("float16", "float32"):
        raise ConfigError(f"embeddings dtype {embeddings_dtype!r} is unknown; allowed: float16, float32")
    if weights_dtype not in _WEIGHT_DTYPES:
        raise ConfigError(f"weights dtype {weights_dtype!r} is unknown; allowed: {', '.join(_WEIGHT_DTYPES)}")
    tensors, shapes, packing = _pack_masks(model)
    mask_bits = sum(math.prod(shapes[k.split(":", 1)[1]]) if k.startswith(("mask:", "coat")) else 8 * t.numel()
                    for k, t in tensors.items())
    floor = sum(t.numel() for t in tensors.values())
    stored, aliases, seen = {}, {}, {}
    for key, t in model.state_dict().items():
        if _is_regenerated(key) or key.endswith(".scores"):
            continue
        if t.data_ptr() in seen:  # one table under two names (--share-all-embeddings): store it once
            aliases[key] = seen[t.data_ptr()]
            continue
        seen[t.data_ptr()] = key
        owner = model.get_submodule(key.rsplit(".", 1)[0])
        pretrained = isinstance(owner, FrozenEmbedding) or key.endswith(".stored_weight")
        if key.endswith("embed_positions.weight") and not t.requires_grad:  # RoBERTa's frozen positions: kept exact
            pretrained = False
        dtype = getattr(torch, embeddings_dtype) if pretrained else torch.float32
        tensors[f"tensor:{key}"] = t.detach().to(dtype).contiguous()
        stored[key] = str(dtype).replace("torch.", "")
        floor += tensors[f"tensor:{key}"].numel() * tensors[f"tensor:{key}"].element_size()
    meta_core = {"cfg": cfg, "dicts": {"src": _dict_text(src_dict), "tgt": _dict_text(tgt_dict)},
                 "langs": list(langs)}
    floor += len(json.dumps(meta_core, default=str).encode())
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION if packing else 2, "masks": shapes,
            "stored": stored, "aliases": aliases, "weights_dtype": weights_dtype, **meta_core, **packing}
    if heads_of(model):
        meta["heads"] = heads_of(model)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(out)), prefix=".artifact.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={_META_KEY: json.dumps(meta, default=str)})
        os.replace(tmp, out)  # a crash never leaves a half-written artifact at `out`
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {"bytes": os.path.getsize(out), "floor": floor, "mask_bits": mask_bits}


def export(checkpoint: str, out: str, data: str | None = None, embeddings_dtype: str = "float16") -> dict[str, int]:
    """Export a supermask fairseq checkpoint; its random weights must regenerate from its seed."""
    state = load_checkpoint(checkpoint)
    model_cfg = _check_supermask_cfg(state.get("cfg"), f"checkpoint {checkpoint!r}")
    src_dict, tgt_dict, langs = load_dictionaries(state["cfg"], data)
    model = _build(model_cfg, src_dict, tgt_dict, _heads_in_state(state["model"]))
    fresh = model.state_dict()
    sd = state["model"]
    if set(sd) != set(fresh):
        raise ConfigError(f"checkpoint {checkpoint!r} does not match its own architecture "
                          f"(dictionaries from another data directory?)")
    # --fp16/--bf16 training rounds the random weights once (model.half()) and fairseq saves them back
    # as fp32: the artifact records the precision whose rounding of the regenerated weights gives the
    # saved ones, and loading rounds the same way
    weights = {k: t for k, t in fresh.items() if _is_regenerated(k) and not k.endswith(".version")}
    saved_dtypes = {sd[k].dtype for k in weights}
    candidates = (list(_WEIGHT_DTYPES.values()) if saved_dtypes == {torch.float32}
                  else list(saved_dtypes) if len(saved_dtypes) == 1 else [])

    def first_mismatch(dtype):
        return next((k for k, t in weights.items() if not torch.equal(t.to(dtype).to(sd[k].dtype), sd[k])), None)

    weights_dtype = next((d for d in candidates if first_mismatch(d) is None), None)
    if weights_dtype is None:
        key = first_mismatch(candidates[0]) if candidates else next(iter(weights))
        raise ConfigError(f"checkpoint {checkpoint!r}: {key} does not regenerate from weight seed "
                          f"{model_cfg.get('weight_seed')}; it cannot be stored as a seed")
    model.load_state_dict(sd)
    cfg = {k: vars(v) if isinstance(v, argparse.Namespace) else v  # legacy models (RoBERTa) keep a Namespace
           for k, v in state["cfg"].items() if k in ("model", "task", "common", "generation", "bpe", "tokenizer",
                                                     "criterion")}
    return export_model(model.eval(), cfg, src_dict, tgt_dict, out, langs, embeddings_dtype,
                        str(weights_dtype).replace("torch.", ""))


def read(path: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """Metadata and tensors of an artifact, validated."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise ConfigError(f"artifact {path!r} does not exist")
    try:
        with safe_open(path, framework="pt") as f:
            meta = json.loads((f.metadata() or {})[_META_KEY])
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open, not a dict)
    except Exception as e:  # noqa: BLE001 - truncated, corrupt or foreign files
        raise ConfigError(f"artifact {path!r} is truncated, corrupt or not an artifact ({type(e).__name__})") from None
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{path!r} is not a one_layer_lottery artifact")
    if meta.get("format_version") not in READS:
        raise ConfigError(f"artifact {path!r} has format version {meta.get('format_version')!r}; "
                          f"this version reads {', '.join(map(str, READS))}")
    if meta.get("weights_dtype", "float32") not in _WEIGHT_DTYPES:
        raise ConfigError(f"artifact {path!r} is corrupt: weights dtype {meta.get('weights_dtype')!r}")
    for name, shape in meta["masks"].items():
        for key, size in masks.packed_sizes(meta, name, math.prod(shape)).items():
            t = tensors.get(key)
            if t is None or t.numel() != size:
                raise ConfigError(f"artifact {path!r} is corrupt: mask {key} is missing or has the wrong size")
    return meta, tensors


def load_model(path: str, data: str | None = None):
    """(model in eval mode, source dictionary, target dictionary, metadata) from an artifact."""
    meta, tensors = read(path)
    src_dict, tgt_dict = _dict_from_text(meta["dicts"]["src"]), _dict_from_text(meta["dicts"]["tgt"])
    if data is not None:
        check_dictionaries(meta, src_dict, tgt_dict, data)
    model = _build(dict(meta["cfg"]["model"]), src_dict, tgt_dict, meta.get("heads"))
    sd = model.state_dict()
    for name, shape in meta["masks"].items():
        n = math.prod(shape)
        levels = masks.unpack_levels(meta, tensors, name, n)
        # scores equal to the mask select exactly that mask (top-k of |{0,1}|); with coats, nested masks
        # make levels 0..C whose top-k at every coat's ratio is exactly that coat
        sd[f"{name}.scores"] = torch.from_numpy(levels).view(shape)
    for key in meta["stored"]:
        sd[key] = tensors[f"tensor:{key}"].float()
    rounding = _WEIGHT_DTYPES[meta.get("weights_dtype", "float32")]
    if rounding != torch.float32:  # the weights as --fp16/--bf16 training saw them
        for key, t in sd.items():
            if _is_regenerated(key) and t.is_floating_point():
                sd[key] = t.to(rounding).float()
    for key, same in meta.get("aliases", {}).items():
        sd[key] = sd[same]
    model.load_state_dict(sd)
    return model.eval(), src_dict, tgt_dict, meta


def check_dictionaries(meta: dict, src_dict, tgt_dict, data: str) -> None:
    langs = meta.get("langs") or ["src", "tgt"]
    for lang, ours in zip(langs, (src_dict, tgt_dict)):
        classifier = lang in ("input0", "label")  # sentence_prediction's layout: DATA/input0/dict.txt
        p = os.path.join(data, lang, "dict.txt") if classifier else os.path.join(data, f"dict.{lang}.txt")
        if not os.path.isfile(p):
            raise ConfigError(f"dictionary {p!r} does not exist")
        with open(p, encoding="utf-8") as f:
            theirs = f.read()
        text = _dict_text(ours)
        if lang == "input0":  # the task adds <mask> when it loads the file
            text = text.removesuffix("<mask> 1\n")
        if theirs != text:
            raise ConfigError(f"{p!r} differs from the artifact's {lang} dictionary; "
                              f"the data directory must be the one the model was trained on")


def expand(path: str, out: str, data: str | None = None) -> None:
    """Rebuild a fairseq checkpoint (loadable by stock fairseq-generate) from an artifact."""
    model, _, _, meta = load_model(path, data)
    state = {"cfg": meta["cfg"], "model": model.state_dict(), "args": None,
             "optimizer_history": [{"criterion_name": "none", "optimizer_name": "none",
                                    "lr_scheduler_state": {"best": None}, "num_updates": 0}],
             "extra_state": {"train_iterator": {"epoch": 1}}, "last_optimizer_state": None}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, out)


def hub(path: str, **generation):
    """A fairseq hub interface (`.translate()`, `.sample()`) over an artifact's model.

    Input is text in the model's (sentencepiece) pieces; `generation` sets e.g. beam=5.
    """
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.hub_utils import GeneratorHubInterface
    from fairseq.tasks.translation import TranslationConfig, TranslationTask
    from omegaconf import OmegaConf

    model, src_dict, tgt_dict, meta = load_model(path)
    task = TranslationTask(TranslationConfig(source_lang=meta["langs"][0], target_lang=meta["langs"][1]),
                           src_dict, tgt_dict)
    cfg = OmegaConf.structured(FairseqConfig)
    cfg.common.cpu = not torch.cuda.is_available()
    for k, v in {"beam": 5, **generation}.items():
        cfg.generation[k] = v
    return GeneratorHubInterface(cfg, task, [model])
