"""The embedded default corpus: a synthetic German-like -> English-like translation task.

Generated here from a seed, so the demo needs no download and commits no third-party
text. It is small but not trivial: a lexicon of ~1,000 invented lemmas (about 2,900
source and 2,300 target word types in the training split, Zipf-distributed), gender/number/case agreement of articles and
adjectives on the source side, verb-second word order after a fronted adverb and
verb-final subordinate clauses that the target side reorders to SVO.
"""

import os
import random
from dataclasses import dataclass

from .io import write_text

SRC, TGT = "src", "tgt"
SPLITS = {"train": 20000, "valid": 500, "test": 500}

_SRC_SYL = (
    ["b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "w", "z", "sch", "st", "br", "kr", "tr", "gr",
     "fl", "pf"],
    ["a", "e", "i", "o", "u", "ä", "ö", "ü", "ei", "au", "ie"],
    ["", "n", "r", "l", "s", "t", "ch", "ng", "ck", "m"],
)
_TGT_SYL = (
    ["b", "c", "d", "f", "g", "h", "j", "l", "m", "n", "p", "r", "s", "t", "v", "w", "th", "sh", "ch", "bl", "cr",
     "st", "pr"],
    ["a", "e", "i", "o", "u", "ea", "oo", "ai", "ow"],
    ["", "n", "r", "l", "s", "t", "ck", "nd", "m", "p"],
)
# lexicon sizes per word class
_SIZES = {"noun": 600, "verb": 200, "adj": 150, "adv": 30, "say": 10}
_GENDERS = ("m", "f", "n")
_DEF = {("nom", "m"): "der", ("nom", "f"): "die", ("nom", "n"): "das",
        ("acc", "m"): "den", ("acc", "f"): "die", ("acc", "n"): "das",
        ("dat", "m"): "dem", ("dat", "f"): "der", ("dat", "n"): "dem"}
_DEF_PL = {"nom": "die", "acc": "die", "dat": "den"}
_INDEF = {("nom", "m"): "ein", ("nom", "f"): "eine", ("nom", "n"): "ein",
          ("acc", "m"): "einen", ("acc", "f"): "eine", ("acc", "n"): "ein",
          ("dat", "m"): "einem", ("dat", "f"): "einer", ("dat", "n"): "einem"}
# adjective endings: weak after a definite article, strong-ish after an indefinite one
_ADJ_WEAK = {("nom", "m"): "e", ("nom", "f"): "e", ("nom", "n"): "e", ("acc", "m"): "en", ("acc", "f"): "e",
             ("acc", "n"): "e", ("dat", "m"): "en", ("dat", "f"): "en", ("dat", "n"): "en"}
_ADJ_MIXED = {("nom", "m"): "er", ("nom", "f"): "e", ("nom", "n"): "es", ("acc", "m"): "en", ("acc", "f"): "e",
              ("acc", "n"): "es", ("dat", "m"): "en", ("dat", "f"): "en", ("dat", "n"): "en"}
_NOUN_PL = {"m": "e", "f": "en", "n": "er"}


@dataclass
class Lexicon:
    src: dict[str, list[str]]
    tgt: dict[str, list[str]]
    gender: list[str]


def _words(rng: random.Random, syl, n: int, taken: set) -> list[str]:
    out = []
    while len(out) < n:
        w = "".join(rng.choice(syl[0]) + rng.choice(syl[1]) + rng.choice(syl[2]) for _ in range(rng.choice((1, 2, 2, 3))))
        if len(w) > 2 and w not in taken:
            taken.add(w)
            out.append(w)
    return out


def make_lexicon(seed: int) -> Lexicon:
    rng = random.Random(seed)
    taken_s, taken_t = set(), set()
    src = {c: _words(rng, _SRC_SYL, n, taken_s) for c, n in _SIZES.items()}
    tgt = {c: _words(rng, _TGT_SYL, n, taken_t) for c, n in _SIZES.items()}
    return Lexicon(src, tgt, [rng.choice(_GENDERS) for _ in range(_SIZES["noun"])])


class _Generator:
    def __init__(self, lex: Lexicon, rng: random.Random):
        self.lex, self.rng = lex, rng
        # Zipf-like weights: a few frequent lemmas, a long tail
        self.weights = {c: [1.0 / (i + 1) ** 0.9 for i in range(n)] for c, n in _SIZES.items()}

    def pick(self, cls: str) -> int:
        return self.rng.choices(range(_SIZES[cls]), self.weights[cls])[0]

    def np(self, case: str) -> tuple[list[str], list[str], bool]:
        """A noun phrase (source words, target words, plural?)."""
        i, lex, rng = self.pick("noun"), self.lex, self.rng
        g, plural, definite = lex.gender[i], rng.random() < 0.3, rng.random() < 0.6
        adj = self.pick("adj") if rng.random() < 0.4 else None
        noun_s, noun_t = lex.src["noun"][i], lex.tgt["noun"][i]
        if plural:
            noun_s += _NOUN_PL[g] + ("n" if case == "dat" and _NOUN_PL[g] != "en" else "")
            noun_t += "s"
            art_s, art_t, ending = ([_DEF_PL[case]], ["the"], "en") if definite else ([], [], "e")
        elif definite:
            art_s, art_t, ending = [_DEF[case, g]], ["the"], _ADJ_WEAK[case, g]
        else:
            art_s, art_t, ending = [_INDEF[case, g]], ["a"], _ADJ_MIXED[case, g]
        adj_s = [lex.src["adj"][adj] + ending] if adj is not None else []
        adj_t = [lex.tgt["adj"][adj]] if adj is not None else []
        return art_s + adj_s + [noun_s], art_t + adj_t + [noun_t], plural

    def verb(self, cls: str, plural: bool) -> tuple[str, str]:
        i = self.pick(cls)
        return (self.lex.src[cls][i] + ("en" if plural else "t"),
                self.lex.tgt[cls][i] + ("" if plural else "s"))

    def sentence(self) -> tuple[str, str]:
        rng = self.rng
        subj_s, subj_t, pl = self.np("nom")
        obj_s, obj_t, _ = self.np("acc")
        v_s, v_t = self.verb("verb", pl)
        r = rng.random()
        if r < 0.3:  # verb second after a fronted adverb; English keeps SVO
            adv = self.pick("adv")
            s = [self.lex.src["adv"][adv], v_s] + subj_s + obj_s
            t = [self.lex.tgt["adv"][adv]] + subj_t + [v_t] + obj_t
        elif r < 0.6:  # matrix clause + verb-final subordinate clause
            sv_s, sv_t = self.verb("say", pl)
            s2_s, s2_t, pl2 = self.np("nom")
            o2_s, o2_t, _ = self.np("acc")
            v2_s, v2_t = self.verb("verb", pl2)
            s = subj_s + [sv_s, ",", "dass"] + s2_s + o2_s + [v2_s]
            t = subj_t + [sv_t, ",", "that"] + s2_t + [v2_t] + o2_t
        else:  # SVO, optionally with a dative prepositional phrase
            s, t = subj_s + [v_s] + obj_s, subj_t + [v_t] + obj_t
            if rng.random() < 0.5:
                pp_s, pp_t, _ = self.np("dat")
                s, t = s + ["mit"] + pp_s, t + ["with"] + pp_t
        s[0], t[0] = s[0].capitalize(), t[0].capitalize()
        return " ".join(s) + " .", " ".join(t) + " ."


def generate(out_dir: str, seed: int = 1, sizes: dict[str, int] = SPLITS) -> dict[str, int]:
    """Write {split}.src / {split}.tgt under out_dir; returns the number of pairs per split."""
    lex = _Generator(make_lexicon(seed), random.Random(seed + 1))
    os.makedirs(out_dir, exist_ok=True)
    for split, n in sizes.items():
        pairs = [lex.sentence() for _ in range(n)]
        for side, lang in ((0, SRC), (1, TGT)):
            write_text(os.path.join(out_dir, f"{split}.{lang}"), "".join(p[side] + "\n" for p in pairs))
    return dict(sizes)
