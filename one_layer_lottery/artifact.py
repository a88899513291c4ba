"""The seed-plus-bits model artifact: export, load, expand.

A supermask model is a pure function of (config, weight seed, masks, frozen pre-trained
embeddings, dictionaries). The artifact is one safetensors file (no pickle: loading runs
no code) holding exactly that: every mask packed 1 bit per weight, the embeddings in
fp16 (or fp32), the config as JSON metadata, and the vocabulary (both dictionaries and, where the
model was prepared with them, both sentencepiece models) as one xz stream. The random weights are
not stored; they are regenerated from the seed and checked at export time.
"""

import argparse
import io
import json
import lzma
import math
import os
import warnings

import numpy as np
import torch

from . import masks
from .errors import ConfigError
from .io import atomic_path, is_regenerated, read_checkpoint, require_file, save, weights_checkpoint
from .supermask import FrozenEmbedding, SupermaskModule

FORMAT = "one_layer_lottery.artifact"
FORMAT_VERSION = 4  # 4: the dictionaries in the xz stream of the vocabulary, no longer JSON metadata
NESTED_COATS = 5  # 5: a multicoated mask's inner coats stored only where the coat around them keeps (written only
# by such models; others still write 4). 3: multicoated or N:M-packed masks (written only by such models; others
# still wrote 2). 2: per-role inits (the config names its init preset). Format 1 (before per-role inits) was written
# only by this repository's early commits; it is refused in one line.
READS = (2, 3, 4, 5)
_META_KEY = "one_layer_lottery"
_WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def dictionary_text(d) -> str:
    return "".join(f"{s} {c}\n" for s, c in zip(d.symbols[d.nspecial:], d.count[d.nspecial:]))


def dictionary_from_text(text: str):
    from fairseq.data import Dictionary

    d = Dictionary()
    d.add_from_file(io.StringIO(text))
    return d


def mask_of(meta: dict, tensors: dict, name: str) -> np.ndarray:
    """The (outer) boolean mask of one module, flat, as the artifact stores it."""
    return masks.outer_mask(meta, tensors, name, math.prod(meta["masks"][name]))


def model_class(model_cfg: dict):
    """The supermask model class (family) of a model config, or None for any other model."""
    from fairseq.models import ARCH_MODEL_REGISTRY

    cls = ARCH_MODEL_REGISTRY.get(model_cfg.get("_name") or model_cfg.get("arch"))
    return cls if hasattr(cls, "build_from_config") else None


def supermask_cfg(cfg: dict, where: str) -> dict:
    """The model config of a supermask checkpoint's saved config, or one line saying it is not one."""
    model_cfg = (cfg or {}).get("model") if isinstance(cfg, dict) else None
    if isinstance(model_cfg, argparse.Namespace):  # fairseq's legacy models pickle their args
        model_cfg = vars(model_cfg)
    name = model_cfg.get("_name") or model_cfg.get("arch") if isinstance(model_cfg, dict) else None
    if not isinstance(model_cfg, dict) or model_class(model_cfg) is None:
        raise ConfigError(f"{where} is not a supermask model (architecture {name!r}); "
                          f"export takes checkpoints of the supermask_transformer and supermask_roberta "
                          f"architectures")
    return dict(model_cfg)


def load_dictionaries(cfg: dict, data: str | None):
    """(source or input dictionary, target or label dictionary, their names) as the checkpoint's task loads them."""
    task = cfg.get("task") or {}
    data = data or str(task.get("data") or "").split(os.pathsep)[0]
    if not data or not os.path.isdir(data):
        raise ConfigError(f"the dictionaries are not in the checkpoint and data directory {data!r} does not exist; "
                          f"pass --data DATA_BIN")
    return model_class(supermask_cfg(cfg, "the checkpoint")).read_dictionaries(task, data)


def _pack_masks(model) -> tuple[dict, dict, dict]:
    """(packed mask tensors, {module: shape}, the rules' metadata entries, e.g. {"coats": {module: 2}})."""
    tensors, shapes, packing = {}, {}, {}
    for name, m in model.named_modules():
        if isinstance(m, SupermaskModule):
            shapes[name] = list(m.scores.shape)
            packed, entries = m.rule.pack(name, m.scores, m.mask())
            tensors.update(packed)
            for key, value in entries.items():
                if isinstance(value, dict):  # {module: value} entries, e.g. coats
                    packing.setdefault(key, {}).update(value)
                else:  # a flag for the whole artifact (nested_coats)
                    packing[key] = value
    return tensors, shapes, packing


def export_model(model, cfg: dict, src_dict, tgt_dict, out: str, langs=("src", "tgt"),
                 embeddings_dtype: str = "float16", weights_dtype: str = "float32",
                 pieces: list[bytes] | None = None) -> dict[str, int]:
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
    mask_bits = sum(masks.packed_bits(packing, name, math.prod(shape), tensors) for name, shape in shapes.items())
    floor = sum(t.numel() for t in tensors.values())
    stored, aliases, seen = {}, {}, {}
    for key, t in model.state_dict().items():
        if is_regenerated(key) or key.endswith(".scores"):
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
    dicts = [dictionary_text(d).encode() for d in (src_dict, tgt_dict)]
    parts = dicts + list(pieces or [])
    # both dictionaries and both sentencepiece models in one xz stream: as JSON metadata the dictionaries took 1.3
    # times their text (escaped twice over), and the two sides share most of their pieces
    blob = lzma.compress(b"".join(parts), preset=9)
    tensors["vocabulary"] = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
    meta = {"format": FORMAT, "format_version": NESTED_COATS if packing.get("nested_coats") else FORMAT_VERSION,
            "masks": shapes, "stored": stored,
            "aliases": aliases, "weights_dtype": weights_dtype, "cfg": cfg, "langs": list(langs),
            "vocabulary": {"dicts": [len(p) for p in dicts], "sentencepiece": [len(p) for p in pieces or []]},
            **packing}
    if model.classification_heads_shape():
        meta["heads"] = model.classification_heads_shape()
    floor += len(blob) + len(json.dumps({"cfg": cfg, "langs": list(langs)}, default=str).encode())
    with atomic_path(out) as tmp:  # a crash never leaves a half-written artifact at `out`
        save_file(tensors, tmp, metadata={_META_KEY: json.dumps(meta, default=str)})
    size = os.path.getsize(out)
    # model_bytes: the model without what a dense model needs as well (its sentencepiece models, dictionaries)
    return {"bytes": size, "floor": floor, "mask_bits": mask_bits, "model_bytes": size - len(blob),
            "format_version": meta["format_version"]}


def export(checkpoint: str, out: str, data: str | None = None, embeddings_dtype: str = "float16",
           spm: str | None = None) -> dict[str, int]:
    """Export a supermask fairseq checkpoint; its random weights must regenerate from its seed.

    The sentencepiece models of `spm` (a directory of spm.{lang}.model or spm.joined.model; default: the spm/
    beside the data directory, as `one-layer-lottery prepare` writes it, where there is one) go in too, so that
    the artifact translates raw text."""
    state = read_checkpoint(checkpoint)
    model_cfg = supermask_cfg(state.get("cfg"), f"checkpoint {checkpoint!r}")
    src_dict, tgt_dict, langs = load_dictionaries(state["cfg"], data)
    family = model_class(model_cfg)
    model = family.build_from_config(model_cfg, src_dict, tgt_dict, family.heads_in_state(state["model"]))
    fresh = model.state_dict()
    sd = state["model"]
    if set(sd) != set(fresh):
        raise ConfigError(f"checkpoint {checkpoint!r} does not match its own architecture "
                          f"(dictionaries from another data directory?)")
    # --fp16/--bf16 training rounds the random weights once (model.half()) and fairseq saves them back
    # as fp32: the artifact records the precision whose rounding of the regenerated weights gives the
    # saved ones, and loading rounds the same way
    weights = {k: t for k, t in fresh.items() if is_regenerated(k) and not k.endswith(".version")}
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
    data_dir = data or str((state["cfg"].get("task") or {}).get("data") or "").split(os.pathsep)[0]
    pieces = sentencepiece_models(spm or os.path.join(os.path.dirname(os.path.abspath(data_dir)), "spm"), langs,
                                  required=spm is not None)
    return export_model(model.eval(), cfg, src_dict, tgt_dict, out, langs, embeddings_dtype,
                        str(weights_dtype).replace("torch.", ""), pieces)


def sentencepiece_models(folder: str, langs, required: bool = False) -> list[bytes] | None:
    """The serialized sentencepiece models of both sides (spm.{lang}.model, else spm.joined.model for both), or
    None where the folder has none (an error when `required`)."""
    paths = [os.path.join(folder, f"spm.{lang}.model") for lang in langs]
    if not all(os.path.isfile(p) for p in paths):
        paths = [os.path.join(folder, "spm.joined.model")] * 2
    if not all(os.path.isfile(p) for p in paths):
        if required:
            raise ConfigError(f"--spm {folder!r} holds neither spm.{langs[0]}.model and spm.{langs[1]}.model nor "
                              f"spm.joined.model")
        return None
    out = []
    for p in paths:
        with open(p, "rb") as f:
            out.append(f.read())
    return out


def read(path: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """Metadata and tensors of an artifact, validated."""
    from safetensors import safe_open

    require_file(path, "artifact")
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
        try:
            sizes = masks.packed_sizes(meta, name, math.prod(shape), tensors)
        except KeyError as e:  # a nested coat's size is counted from the plane before it
            sizes = {e.args[0]: -1}
        for key, size in sizes.items():
            t = tensors.get(key)
            if t is None or t.numel() != size:
                raise ConfigError(f"artifact {path!r} is corrupt: mask {key} is missing or has the wrong size")
    if "vocabulary" in meta:  # format 4: the dictionaries come out of the vocabulary's xz stream
        try:
            texts = [p.decode() for p in _vocabulary(meta, tensors)[:2]]
        except (KeyError, lzma.LZMAError, UnicodeDecodeError, TypeError, ValueError):
            raise ConfigError(f"artifact {path!r} is corrupt: its vocabulary does not unpack") from None
        meta["dicts"] = dict(zip(("src", "tgt"), texts))
    return meta, tensors


def _vocabulary(meta: dict, tensors: dict) -> list[bytes]:
    """Format 4's vocabulary stream, split: [source dictionary, target dictionary, (sentencepiece models)]."""
    blob = lzma.decompress(tensors["vocabulary"].numpy().tobytes())
    sizes = [*meta["vocabulary"]["dicts"], *meta["vocabulary"]["sentencepiece"]]
    if len(sizes) not in (2, 4) or sum(sizes) != len(blob):
        raise ValueError("vocabulary sizes do not add up")
    starts = np.cumsum([0, *sizes[:-1]])
    return [blob[a:a + n] for a, n in zip(starts, sizes)]


def load_model(path: str, data: str | None = None):
    """(model in eval mode, source dictionary, target dictionary, metadata) from an artifact."""
    meta, tensors = read(path)
    src_dict, tgt_dict = dictionary_from_text(meta["dicts"]["src"]), dictionary_from_text(meta["dicts"]["tgt"])
    model_cfg = supermask_cfg(meta["cfg"], f"artifact {path!r}")
    if data is not None:
        check_dictionaries(meta, src_dict, tgt_dict, data)
    model = model_class(model_cfg).build_from_config(model_cfg, src_dict, tgt_dict, meta.get("heads"))
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
            if is_regenerated(key) and t.is_floating_point():
                sd[key] = t.to(rounding).float()
    for key, same in meta.get("aliases", {}).items():
        sd[key] = sd[same]
    model.load_state_dict(sd)
    return model.eval(), src_dict, tgt_dict, meta


def check_dictionaries(meta: dict, src_dict, tgt_dict, data: str) -> None:
    """The data directory's dictionaries must be the artifact's, symbol for symbol and count for count."""
    family = model_class(meta["cfg"]["model"])
    langs = meta.get("langs") or ["src", "tgt"]
    for lang, ours in zip(langs, (src_dict, tgt_dict)):
        p = family.dictionary_file(data, lang)
        with open(p, encoding="utf-8") as f:
            theirs = f.read()
        if theirs != family.dictionary_text(lang, dictionary_text(ours)):
            raise ConfigError(f"{p!r} differs from the artifact's {lang} dictionary; "
                              f"the data directory must be the one the model was trained on")


def expand(path: str, out: str, data: str | None = None) -> None:
    """Rebuild a fairseq checkpoint (loadable by stock fairseq-generate) from an artifact."""
    model, _, _, meta = load_model(path, data)
    save(weights_checkpoint(meta["cfg"], model.state_dict()), out)


def upgrade(path: str, out: str) -> dict[str, int]:
    """Rewrite an artifact of an earlier format in this one: the same model, mask for mask (what export returns)."""
    model, src_dict, tgt_dict, meta = load_model(path)
    protos = [p.serialized_model_proto() for p in sentencepiece_of(meta, read(path)[1]) or ()]
    stored = set(meta["stored"].values())
    return export_model(model, meta["cfg"], src_dict, tgt_dict, out, meta.get("langs") or ("src", "tgt"),
                        "float16" if "float16" in stored else "float32", meta.get("weights_dtype", "float32"),
                        protos or None)


def carries_sentencepiece(meta: dict) -> bool:
    return bool(meta.get("sentencepiece") or meta.get("vocabulary", {}).get("sentencepiece"))


def sentencepiece_of(meta: dict, tensors: dict):
    """(source, target) sentencepiece processors an artifact carries, or None."""
    if "vocabulary" in meta:
        protos = _vocabulary(meta, tensors)[2:]
    elif "sentencepiece" in meta:  # formats 2 and 3: the sentencepiece models alone in their xz stream
        blob = lzma.decompress(tensors["sentencepiece"].numpy().tobytes())
        protos = [blob[:meta["sentencepiece"][0]], blob[meta["sentencepiece"][0]:]]
    else:
        protos = []
    if not protos:
        return None
    import sentencepiece as spm

    return tuple(spm.SentencePieceProcessor(model_proto=p) for p in protos)


def hub(path: str, **generation):
    """A fairseq hub interface (`.translate()`, `.sample()`) over an artifact's model: plain text in and out when
    the artifact carries its sentencepiece models, else text in the model's pieces. `generation` sets e.g. beam=5.
    """
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.hub_utils import GeneratorHubInterface
    from fairseq.tasks.translation import TranslationConfig, TranslationTask
    from omegaconf import OmegaConf

    class RawTextHub(GeneratorHubInterface):
        def apply_bpe(self, sentence: str) -> str:
            return " ".join(pieces[0].encode(sentence, out_type=str)) if pieces else sentence

        def remove_bpe(self, sentence: str) -> str:
            return pieces[1].decode(sentence.split()) if pieces else sentence

        def _build_batches(self, *args, **kwargs):
            with warnings.catch_warnings():  # fairseq asks every loader to pin memory, which a CPU cannot
                warnings.filterwarnings("ignore", "'pin_memory' argument is set as true", UserWarning)
                return super()._build_batches(*args, **kwargs)

    model, src_dict, tgt_dict, meta = load_model(path)
    if model_class(meta["cfg"]["model"]).task_name != "translation":
        raise ConfigError(f"artifact {path!r} is a {model_class(meta['cfg']['model']).task_name} model, not a "
                          f"translation model")
    pieces = sentencepiece_of(meta, read(path)[1])
    task = TranslationTask(TranslationConfig(source_lang=meta["langs"][0], target_lang=meta["langs"][1]),
                           src_dict, tgt_dict)
    cfg = OmegaConf.structured(FairseqConfig)
    cfg.common.cpu = not torch.cuda.is_available()
    for k, v in {"beam": 5, **generation}.items():
        cfg.generation[k] = v
    return RawTextHub(cfg, task, [model])
