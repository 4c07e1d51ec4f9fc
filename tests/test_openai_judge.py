"""OpenAIJudge against a real loopback HTTP server (tests.fake_openai). No database, no mocks."""

from __future__ import annotations

import itertools
import json
import time
from decimal import Decimal
from typing import Any

import pytest

from annotators.base import JudgeItem, JudgeOutcome, JudgeRequest
from annotators.openai_backend import OpenAIJudge, from_config
from bench.judge_http_bench import http_judge_bench
from tests.fake_openai import (
    FakeOpenAI,
    Received,
    Reply,
    chat_reply,
    error_reply,
    json_verdict,
    logprobs_reply,
    rate_limited,
    schema_rejected,
)
from webapp.scheme import LIKERT5, RANKING, STRENGTH7, Scheme

OVERALL = Scheme(scale=LIKERT5, aspects=("overall",))
TWO_ASPECTS = Scheme(scale=LIKERT5, aspects=("overall", "helpful"))
STRENGTH = Scheme(scale=STRENGTH7, aspects=("overall",))
ITEM = JudgeItem(11, ({"role": "user", "content": "Capital of France?"},), ("Paris.", "Lyon, I think."))
SWAPPED = JudgeRequest(ITEM, (1, 0))
AS_IMPORTED = JudgeRequest(ITEM, (0, 1))


def make_judge(fake: FakeOpenAI, **settings: Any) -> OpenAIJudge:
    # Short backoff so retry tests take milliseconds, not seconds.
    defaults: dict[str, Any] = {"structured": "off", "backoff_base_s": 0.01, "max_retries": 3, "timeout_s": 5}
    return OpenAIJudge(base_url=fake.url, model="judge-model", **{**defaults, **settings})


def judge_one(judge: OpenAIJudge, request: JudgeRequest = SWAPPED, scheme: Scheme = OVERALL) -> JudgeOutcome:
    (outcome,) = judge.judge([request], scheme)
    return outcome


# --- verdicts ----------------------------------------------------------------------------------------


def test_a_text_verdict_on_the_swapped_order_is_stored_canonical_with_rationale_and_usage() -> None:
    text = "Rationale: Response A hedges.\noverall: B-is-clearly-better\nhelpful: A-is-slightly-better"
    with FakeOpenAI([chat_reply(text, prompt_tokens=321, completion_tokens=45)]) as fake:
        outcome = judge_one(make_judge(fake), SWAPPED, TWO_ASPECTS)
        sent = fake.chat_requests[0].body

    assert outcome.status == "done"
    assert outcome.labels == {"overall": "A-is-clearly-better", "helpful": "B-is-slightly-better"}
    assert outcome.rationale == "Response A hedges."
    assert outcome.raw_output == text
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (321, 45)
    assert outcome.latency_ms is not None
    assert outcome.latency_ms >= 0
    assert (outcome.item_id, outcome.order) == (11, (1, 0))
    assert sent["model"] == "judge-model"
    assert sent["temperature"] == 0.0
    assert "response_format" not in sent
    # Shown order: the swapped request shows canonical response 1 as "Response A".
    assert "[The Start of Response A]\nLyon, I think.\n" in sent["messages"][1]["content"]


def test_structured_mode_sends_the_json_schema_and_reads_the_json_verdict() -> None:
    with FakeOpenAI([json_verdict({"overall": -3}, "A is right.")]) as fake:
        outcome = judge_one(make_judge(fake, structured="auto"), SWAPPED, STRENGTH)
        sent = fake.chat_requests[0].body

    assert outcome.labels == {"overall": 3}
    assert outcome.rationale == "A is right."
    response_format = sent["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["strict"] is True
    labels = response_format["json_schema"]["schema"]["properties"]["labels"]
    assert labels["properties"]["overall"]["enum"] == [-3, -2, -1, 0, 1, 2, 3]


def test_a_server_refusing_response_format_gets_text_prompts_for_the_rest_of_the_backends_life() -> None:
    with FakeOpenAI([schema_rejected(400)]) as fake:
        judge = make_judge(fake, structured="auto")
        first = judge_one(judge, AS_IMPORTED)
        second = judge_one(judge, SWAPPED)
        bodies = [r.body for r in fake.chat_requests]

    assert (first.status, second.status) == ("done", "done")
    assert first.labels == {"overall": "A-is-clearly-better"}  # the fake's deterministic "A wins"
    assert second.labels == {"overall": "B-is-clearly-better"}
    assert ["response_format" in b for b in bodies] == [True, False, False]
    assert "Reply with only a JSON object" in bodies[0]["messages"][1]["content"]
    assert bodies[1]["messages"][1]["content"].endswith("overall: <label>")


def test_json_schema_mode_does_not_fall_back_when_refused() -> None:
    with FakeOpenAI([schema_rejected(422)]) as fake:
        outcome = judge_one(make_judge(fake, structured="json_schema"))
        count = len(fake.chat_requests)

    assert outcome.status == "failed"
    assert outcome.retryable is False
    assert outcome.error.startswith("HTTP 422: ")
    assert count == 1


def test_malformed_output_fails_without_retry_and_keeps_the_raw_output() -> None:
    with FakeOpenAI([chat_reply("I like both of them equally, honestly!")]) as fake:
        outcome = judge_one(make_judge(fake), SWAPPED, TWO_ASPECTS)
        count = len(fake.chat_requests)

    assert outcome.status == "failed"
    assert outcome.retryable is False
    assert outcome.labels == {}
    assert outcome.raw_output == "I like both of them equally, honestly!"
    assert outcome.error == "unreadable verdict: no verdict for overall, helpful"
    assert outcome.prompt_tokens == 100  # the tokens were spent all the same
    assert count == 1


def test_output_cut_at_max_tokens_says_so_in_the_error() -> None:
    with FakeOpenAI([chat_reply("Rationale: Both are", finish_reason="length")]) as fake:
        outcome = judge_one(make_judge(fake, max_tokens=5))

    assert outcome.error == "unreadable verdict: no verdict for overall (output cut at max_tokens=5)"


def test_one_bad_item_does_not_sink_the_batch() -> None:
    def script(received: Received) -> Reply | None:
        return chat_reply("no idea") if "BROKEN" in received.prompt else None

    items = [JudgeItem(i, ({"role": "user", "content": "BROKEN" if i == 2 else "ok"},), ("x", "y")) for i in range(5)]
    with FakeOpenAI(script) as fake:
        outcomes = make_judge(fake, concurrency=4).judge([JudgeRequest(i, (0, 1)) for i in items], OVERALL)

    assert [o.item_id for o in outcomes] == [0, 1, 2, 3, 4]
    assert [o.status for o in outcomes] == ["done", "done", "failed", "done", "done"]


def test_a_ranking_project_is_judged_from_a_json_ranking_mapped_to_canonical_indices() -> None:
    item = JudgeItem(5, ({"role": "user", "content": "q"},), ("zero", "one", "two"))
    reply = chat_reply(json.dumps({"rationale": "C wins.", "ranking": ["C", "A", "B"]}))
    with FakeOpenAI([reply]) as fake:
        outcome = judge_one(make_judge(fake, structured="auto"), JudgeRequest(item, (2, 0, 1)), Scheme(kind=RANKING))
        schema = fake.chat_requests[0].body["response_format"]["json_schema"]["schema"]

    assert outcome.status == "done"
    assert outcome.ranking == [1, 2, 0]
    assert outcome.labels == {}
    assert schema["properties"]["ranking"]["items"]["enum"] == ["A", "B", "C"]


# --- transient failures ------------------------------------------------------------------------------


def test_a_429_burst_with_retry_after_is_waited_out_and_then_labelled() -> None:
    with FakeOpenAI([rate_limited(0.15), rate_limited(0.15), rate_limited(0.15)]) as fake:
        outcome = judge_one(make_judge(fake, max_retries=3))
        arrivals = [r.at for r in fake.chat_requests]

    assert outcome.status == "done"
    assert outcome.labels == {"overall": "B-is-clearly-better"}
    assert len(arrivals) == 4
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert min(gaps) >= 0.15  # Retry-After is a floor, never shortened by the jitter
    assert outcome.latency_ms is not None
    assert outcome.latency_ms >= 450


def test_a_500_then_success_is_retried_inside_the_backend() -> None:
    with FakeOpenAI([error_reply(500), error_reply(503)]) as fake:
        outcome = judge_one(make_judge(fake))
        count = len(fake.chat_requests)

    assert outcome.status == "done"
    assert count == 3


def test_a_200_with_a_garbled_body_is_retried() -> None:
    with FakeOpenAI([Reply(200, "<html>upstream gateway</html>")]) as fake:
        outcome = judge_one(make_judge(fake))
        count = len(fake.chat_requests)

    assert outcome.status == "done"
    assert count == 2


def test_a_500_forever_fails_retryable_once_the_retries_are_spent() -> None:
    with FakeOpenAI(lambda received: error_reply(500, "upstream exploded")) as fake:
        outcome = judge_one(make_judge(fake, max_retries=2))
        count = len(fake.chat_requests)

    assert outcome.status == "failed"
    assert outcome.retryable is True
    assert outcome.error.startswith("HTTP 500: ")
    assert "upstream exploded" in outcome.error
    assert count == 3


def test_a_retry_after_longer_than_the_backoff_cap_is_handed_back_to_the_caller_at_once() -> None:
    with FakeOpenAI([rate_limited(120)]) as fake:
        outcome = judge_one(make_judge(fake, backoff_max_s=5))
        count = len(fake.chat_requests)

    assert outcome.status == "failed"
    assert outcome.retryable is True
    assert outcome.retry_after == 120.0
    assert count == 1


def test_a_client_error_is_not_retried() -> None:
    with FakeOpenAI([error_reply(404, "model judge-model does not exist")]) as fake:
        outcome = judge_one(make_judge(fake))
        count = len(fake.chat_requests)

    assert (outcome.status, outcome.retryable, count) == ("failed", False, 1)
    assert "does not exist" in outcome.error


def test_a_response_slower_than_the_timeout_fails_retryable() -> None:
    with FakeOpenAI(delay_s=1.0) as fake:
        started = time.monotonic()
        outcome = judge_one(make_judge(fake, timeout_s=0.2, max_retries=0))
        elapsed = time.monotonic() - started

    assert outcome.status == "failed"
    assert outcome.retryable is True
    assert outcome.error.startswith("timeout")
    assert elapsed < 0.9


def test_an_unreachable_server_fails_retryable() -> None:
    with FakeOpenAI() as fake:
        url = fake.url  # the port is free again once the server stops
    judge = OpenAIJudge(base_url=url, model="m", max_retries=1, backoff_base_s=0.01)

    outcome = judge_one(judge)

    assert outcome.status == "failed"
    assert outcome.retryable is True
    assert outcome.error.startswith("connection error")


# --- logprobs mode -----------------------------------------------------------------------------------


def test_logprobs_mode_gives_a_soft_preference_in_canonical_order() -> None:
    with FakeOpenAI([logprobs_reply({"A": 0.6, " A": 0.2, "B": 0.15, "the": 0.05})]) as fake:
        outcome = judge_one(make_judge(fake, mode="logprobs"), SWAPPED, STRENGTH)
        sent = fake.chat_requests[0].body

    # Shown A (canonical B) has 0.8 of the A/B mass, so canonical P(A) = 0.15 / 0.95.
    assert outcome.soft["overall"] == pytest.approx(0.15 / 0.95)
    assert outcome.labels == {"overall": 2}
    assert outcome.status == "done"
    assert json.loads(outcome.raw_output)["overall"][0]["token"] == "A"
    assert (sent["max_tokens"], sent["logprobs"], sent["top_logprobs"]) == (1, True, 20)
    assert sent["messages"][-1]["content"].endswith("Answer with only the letter A or B.")


def test_logprobs_mode_asks_once_per_aspect_and_sums_the_tokens() -> None:
    replies = [logprobs_reply({"A": 0.5, "B": 0.5}, prompt_tokens=200), logprobs_reply({"A": 0.9, "B": 0.1})]
    with FakeOpenAI(replies) as fake:
        outcome = judge_one(make_judge(fake, mode="logprobs"), AS_IMPORTED, TWO_ASPECTS)
        prompts = [r.prompt for r in fake.chat_requests]

    assert outcome.labels == {"overall": "Tie", "helpful": "A-is-clearly-better"}
    assert outcome.soft == {"overall": pytest.approx(0.5), "helpful": pytest.approx(0.9)}
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (300, 2)
    assert "judged on overall" in prompts[0]
    assert "judged on helpful" in prompts[1]


def test_logprobs_without_an_a_or_b_candidate_fail_non_retryable() -> None:
    with FakeOpenAI([logprobs_reply({"Sure": 0.7, "I": 0.3})]) as fake:
        outcome = judge_one(make_judge(fake, mode="logprobs"))

    assert outcome.status == "failed"
    assert outcome.retryable is False
    assert "neither A nor B among the top tokens ('Sure', 'I')" in outcome.error
    assert outcome.soft == {}


def test_logprobs_mode_refuses_ranking_projects_without_sending_anything() -> None:
    item = JudgeItem(5, ({"role": "user", "content": "q"},), ("zero", "one", "two"))
    with FakeOpenAI() as fake:
        outcome = judge_one(make_judge(fake, mode="logprobs"), JudgeRequest(item, (0, 1, 2)), Scheme(kind=RANKING))
        count = len(fake.chat_requests)

    assert (outcome.status, outcome.retryable, count) == ("failed", False, 0)
    assert outcome.error.startswith("logprobs mode judges pairwise projects only")


# --- keys, concurrency, cost, limits, configuration -----------------------------------------------------


def test_the_api_key_is_sent_as_a_bearer_header_and_never_appears_in_outcomes(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-test-0123456789abcdef"
    monkeypatch.setenv("HP_TEST_JUDGE_KEY", key)
    with FakeOpenAI([chat_reply(f"overall: [[A]] (key {key})")], api_key=key) as fake:
        judge = make_judge(fake, api_key_env="HP_TEST_JUDGE_KEY")
        good = judge_one(judge)
        fake.push(error_reply(400, f"Bad request for key {key}"))
        bad = judge_one(judge)
        headers = fake.chat_requests[0].headers

    assert headers["authorization"] == f"Bearer {key}"
    assert good.status == "done"
    assert bad.status == "failed"
    for outcome in (good, bad):
        assert key not in json.dumps(outcome.__dict__, default=str)
    assert bad.error == 'HTTP 400: {"error": {"message": "Bad request for key ***", "type": "fake", "code": 400}}'
    assert key not in repr(judge)


def test_a_named_but_unset_key_variable_fails_each_item_without_calling_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HP_TEST_MISSING_KEY", raising=False)
    items = [JudgeItem(1, ({"role": "user", "content": "q"},), ("a", "b"))]
    with FakeOpenAI() as fake:
        # Configuring the judge works without the key (the web app need not hold it); judging does not.
        judge = OpenAIJudge(base_url=fake.url, model="m", api_key_env="HP_TEST_MISSING_KEY")
        (outcome,) = judge.judge([JudgeRequest(items[0], (0, 1))], Scheme(aspects=("overall",)))
        assert fake.chat_requests == []
    assert outcome.status == "failed"
    assert not outcome.retryable
    assert "HP_TEST_MISSING_KEY is not set" in outcome.error


def test_sixteen_requests_are_in_flight_at_once_with_concurrency_sixteen() -> None:
    # Counted by the server, not timed: a wall-clock bound failed on a busy machine, and so did a count
    # within a 0.5 s answer delay (12 of 16 once, the client's threads starting late). The server now holds
    # each request until 16 are in (30 s at most): a client that sent fewer at once would stay below 16.
    # The time it saves is measured by make bench (the HTTP judge benchmark).
    items = [JudgeItem(i, ({"role": "user", "content": f"q{i}"},), ("a", "b")) for i in range(16)]
    with FakeOpenAI(hold_until_in_flight=16) as fake:
        judge = make_judge(fake, concurrency=16)
        outcomes = judge.judge([JudgeRequest(i, (0, 1)) for i in items], OVERALL)
        peak = fake.peak_in_flight

    assert all(o.status == "done" for o in outcomes)
    assert peak == 16


def test_token_usage_is_priced_per_million_tokens() -> None:
    with FakeOpenAI([chat_reply("overall: Tie", prompt_tokens=1200, completion_tokens=80)]) as fake:
        judge = make_judge(fake, price_prompt_per_m=2.5, price_completion_per_m=10)
        outcome = judge_one(judge)

    assert judge.cost(outcome) == Decimal("0.0038")  # 1200 x 2.5 / 1e6 + 80 x 10 / 1e6
    assert make_judge(fake).cost(outcome) is None  # no prices configured
    assert judge.cost(JudgeOutcome(1, (0, 1), "failed")) is None  # no usage reported


class RecordingLimiter:
    """A real limiter that lets everything through and remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def acquire(self, tokens: int) -> None:
        self.asked.append(tokens)


def test_the_limiter_is_asked_before_every_request_including_retries() -> None:
    limiter = RecordingLimiter()
    with FakeOpenAI([error_reply(502)]) as fake:
        outcome = judge_one(make_judge(fake, limiter=limiter, max_tokens=300))
        body_size = len(json.dumps(fake.chat_requests[0].body))

    assert outcome.status == "done"
    assert len(limiter.asked) == 2
    # About four characters a token for the prompt, plus every token the reply may use.
    assert limiter.asked[0] == pytest.approx(body_size // 4 + 300, abs=5)


def test_the_prompt_version_follows_the_settings_that_change_verdicts() -> None:
    def version(**settings: Any) -> str:
        return OpenAIJudge(**{"base_url": "http://127.0.0.1:9/v1", "model": "m", **settings}).prompt_version

    base = version()
    assert len(base) == 12
    assert base == version(concurrency=2, max_retries=9, timeout_s=3)
    assert base != version(model="other")
    assert base != version(mode="logprobs")
    assert base != version(structured="off")
    assert base != version(temperature=0.7)
    assert base != version(criteria="Prefer concise answers.")


def test_from_config_builds_a_judge_from_plain_values() -> None:
    judge = from_config(
        "gpt-4o-mini",
        {"base_url": "https://api.openai.com/v1", "concurrency": 4, "mode": "logprobs", "price_prompt_per_m": 0.15},
    )

    assert (judge.model, judge.concurrency, judge.mode, judge.price_prompt_per_m) == (
        "gpt-4o-mini",
        4,
        "logprobs",
        0.15,
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "base_url: required"),
        ({"base_url": "ftp://x/v1"}, "base_url: expected an http"),
        ({"base_url": "http://h/v1", "temprature": 0}, "temprature: unknown setting"),
        ({"base_url": "http://h/v1", "structured": "yes"}, "structured: expected one of auto, json_schema, off"),
        ({"base_url": "http://h/v1", "mode": "scores"}, "mode: expected one of verdict, logprobs"),
        ({"base_url": "http://h/v1", "concurrency": 0}, "concurrency: expected an integer >= 1"),
        ({"base_url": "http://h/v1", "concurrency": True}, "concurrency: expected an integer >= 1"),
        ({"base_url": "http://h/v1", "max_tokens": "100"}, "max_tokens: expected an integer >= 1"),
        ({"base_url": "http://h/v1", "price_completion_per_m": -1}, "price_completion_per_m: expected a number >= 0"),
        ({"base_url": "http://h/v1", "api_key_env": "sk-abc"}, "api_key_env: expected the name of an environment"),
        ({"base_url": "http://h/v1", "extra_body": {"model": "x"}}, "extra_body: may not set model"),
    ],
)
def test_from_config_names_the_bad_key(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        from_config("m", config)


# --- the fake server itself ------------------------------------------------------------------------------


def test_the_fake_answers_any_judge_prompt_deterministically() -> None:
    longer = JudgeItem(1, ({"role": "user", "content": "q"},), ("short", "a much longer answer"))
    both = [JudgeRequest(longer, (0, 1)), JudgeRequest(longer, (1, 0))]
    three = JudgeItem(2, ({"role": "user", "content": "q"},), ("bb", "a", "ccc"))
    with FakeOpenAI(verdict="longer") as fake:
        for structured in ("auto", "off"):
            judge = make_judge(fake, structured=structured)
            assert [o.labels for o in judge.judge(both, TWO_ASPECTS)] == [
                {"overall": "B-is-clearly-better", "helpful": "B-is-clearly-better"}
            ] * 2
            assert [o.labels for o in judge.judge(both, STRENGTH)] == [{"overall": 3}] * 2
            ranked = judge.judge([JudgeRequest(three, (1, 2, 0))], Scheme(kind=RANKING))
            assert ranked[0].ranking == [2, 0, 1]
        soft = make_judge(fake, mode="logprobs").judge(both, OVERALL)
        assert [o.labels for o in soft] == [{"overall": "B-is-clearly-better"}] * 2


def test_the_fake_lists_its_model_and_records_get_requests() -> None:
    import urllib.request

    with FakeOpenAI(model="tiny") as fake, urllib.request.urlopen(fake.url + "/models", timeout=5) as response:  # noqa: S310
        listed = json.loads(response.read())
        paths = [r.path for r in fake.requests]

    assert listed["data"][0]["id"] == "tiny"
    assert paths == ["/v1/models"]


def test_the_http_benchmark_keeps_the_worker_pool_close_to_the_ideal() -> None:
    result = http_judge_bench()

    assert (result["items"], result["requests"], result["failed"]) == (200, 400, 0)
    assert result["ideal_seconds"] == pytest.approx(1.25)
    assert result["ratio"] < 2.0  # loose: shared CI machines are noisy
