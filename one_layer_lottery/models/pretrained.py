"""Pre-trained token tables (--pretrained-embeddings): read from a trained fairseq checkpoint and checked against
the model's dictionaries, for every family."""

import os

from torch import Tensor

from ..errors import ConfigError
from ..io import read_checkpoint


def read_table(path: str, state: dict, key: str, dictionary, dim: int, what: str = "") -> Tensor:
    """One token table of a checkpoint's state dict, checked against the dictionary and width it must fit."""
    model = state["model"]
    table = model[key].float()
    if table.shape[1] != dim:
        raise ConfigError(f"--pretrained-embeddings {path!r}: {what}embedding dim is {table.shape[1]}, the model's "
                          f"is {dim}; they must match")
    if table.shape[0] != len(dictionary):
        raise ConfigError(f"--pretrained-embeddings {path!r}: {what}embedding has {table.shape[0]} rows, the "
                          f"{what}dictionary has {len(dictionary)} symbols; the dictionaries must match")
    return table.clone()


def translation_tables(path: str, src_dict, tgt_dict, enc_dim: int, dec_dim: int) -> tuple[Tensor, Tensor]:
    """Encoder and decoder token embeddings of a trained dense fairseq translation checkpoint, checked against ours."""
    state = read_checkpoint(path, "--pretrained-embeddings")
    out = []
    for side, dictionary, dim in (("encoder", src_dict, enc_dim), ("decoder", tgt_dict, dec_dim)):
        key = f"{side}.embed_tokens.weight"
        if key not in state["model"]:
            raise ConfigError(f"--pretrained-embeddings {path!r} has no {key}: not a fairseq translation checkpoint")
        out.append(read_table(path, state, key, dictionary, dim, f"{side} "))
        dict_path = translation_dictionary_file(state, side)
        if dict_path:
            compare_dictionary(path, dict_path, dictionary, f"{side} ")
    return out[0], out[1]


def translation_dictionary_file(state: dict, side: str) -> str | None:
    """The dictionary file the checkpoint's task read for one side, where its data directory is still there."""
    task = (state.get("cfg") or {}).get("task") or {}
    data = str(task.get("data") or "").split(os.pathsep)[0]
    if not data:
        return None
    langs = (task.get("source_lang"), task.get("target_lang"))
    if None in langs and os.path.isdir(data):
        from fairseq.data.data_utils import infer_language_pair

        langs = infer_language_pair(data)
    lang = langs[0 if side == "encoder" else 1]
    path = os.path.join(data, f"dict.{lang}.txt") if lang else None
    return path if path and os.path.isfile(path) else None


def compare_dictionary(path: str, dict_path: str, dictionary, what: str = "") -> None:
    """The dictionary file `dict_path` (a pre-trained checkpoint's) must equal ours symbol for symbol."""
    with open(dict_path, encoding="utf-8") as f:
        theirs = [line.rsplit(" ", 1)[0] for line in f if line.strip()]
    for i, (a, b) in enumerate(zip(dictionary.symbols[dictionary.nspecial:], theirs)):
        if a != b:
            raise ConfigError(f"--pretrained-embeddings {path!r}: {what}dictionary differs from {dict_path} "
                              f"at line {i + 1} ({a!r} vs {b!r}); the dictionaries must match")
