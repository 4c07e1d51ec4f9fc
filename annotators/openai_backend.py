"""A judge for any OpenAI-compatible chat-completions server: vLLM, Ollama, llama.cpp, OpenAI.

Pure code: no Django, stdlib HTTP only. Two modes:

- "verdict": one request per shown order asking for a rationale and a label per aspect (or a
  ranking), as JSON under `response_format` json_schema where the server takes it, else as text;
  see `annotators.prompts` for the prompt and the parsing rules.
- "logprobs": pairwise only, AlpacaEval style. One request per aspect with a prompt answered by a
  single letter (max_tokens=1, top_logprobs); P(A) is the softmax over the "A"/"B" candidates the
  server lists, and the label is `probability_to_label` of the canonical P(A).

Transient failures (429, 5xx, timeouts, connection errors) are retried here with exponential backoff
and full jitter, waiting at least what Retry-After asks. When retries run out, or the server asks
for a longer wait than `backoff_max_s`, the outcome is "failed" and retryable with `retry_after`
set, so the caller can reschedule. Unreadable output is "failed" and not retryable, with the raw
output kept. `timeout_s` bounds each wait on the socket (connect, first byte, each read), and an
outcome's `latency_ms` is the whole time it took, retries and waits included.

The API key is read from the environment variable `api_key_env` names; it is sent only in the
Authorization header and scrubbed from every error text and raw output.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import queue
import ssl
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from annotators.backoff import backoff_delay
from annotators.base import JudgeOutcome, JudgeRequest
from annotators.labels import probability_to_label
from annotators.prompts import (
    CHOICE_TEMPLATE,
    DEFAULT_TEMPLATE,
    PromptTemplate,
    VerdictParseError,
    build_choice_messages,
    build_messages,
    parse_verdict,
    to_canonical,
    verdict_schema,
)
from annotators.ratelimit import Limiter
from webapp.scheme import PAIRWISE, Label, Scheme

logger = logging.getLogger(__name__)

STRUCTURED_MODES = ("auto", "json_schema", "off")
MODES = ("verdict", "logprobs")
_RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# Words a server uses when it refuses response_format (vLLM, llama.cpp, older OpenAI-compatible APIs).
_SCHEMA_WORDS = ("response_format", "json_schema", "schema", "structured", "guided")


class _CallFailed(Exception):
    """An HTTP call that did not give a usable completion."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None, status: int = 0):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


class _SchemaRejected(Exception):
    """The server refused response_format; the request goes again as text."""


class ChatFailed(Exception):
    """`OpenAIJudge.chat` got no usable completion. The message never holds the API key.

    retryable: a transient failure (429, 5xx, timeout) that outlasted the retries; retry_after: the
    wait the server last asked for, if it said.
    """

    def __init__(self, message: str, *, retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass
class ChatReply:
    """One chat completion's text (API key scrubbed) and what it cost."""

    text: str
    finish_reason: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: int


@dataclass
class _Completion:
    data: dict[str, Any]
    prompt_tokens: int | None
    completion_tokens: int | None


def _parse_retry_after(headers: http.client.HTTPMessage) -> float | None:
    """Seconds from retry-after-ms (OpenAI) or Retry-After (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class OpenAIJudge:
    """JudgeBackend for an OpenAI-compatible /chat/completions endpoint. Settings are plain values."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        timeout_s: float = 60.0,
        structured: str = "auto",
        mode: str = "verdict",
        concurrency: int = 8,
        max_retries: int = 4,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        top_logprobs: int = 20,
        price_prompt_per_m: float | None = None,
        price_completion_per_m: float | None = None,
        criteria: str = "",
        extra_body: Mapping[str, Any] | None = None,
        limiter: Limiter | None = None,
        template: PromptTemplate | None = None,
        choice_template: PromptTemplate | None = None,
    ) -> None:
        if structured not in STRUCTURED_MODES:
            raise ValueError(f"structured: must be one of {', '.join(STRUCTURED_MODES)}, not {structured!r}")
        if mode not in MODES:
            raise ValueError(f"mode: must be one of {', '.join(MODES)}, not {mode!r}")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url: must be an http(s) URL, not {base_url!r}")
        self.base_url = base_url
        # For logs and repr: a base URL may carry user:password, which must not be printed.
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        self.endpoint = f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"
        self.model = model
        self.api_key_env = api_key_env
        # Read where the judging happens (a worker), not where the judge is configured (the web app).
        self._api_key = os.environ.get(api_key_env, "") if api_key_env else ""
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.timeout_s = float(timeout_s)
        self.structured = structured
        self.mode = mode
        self.concurrency = max(1, int(concurrency))
        self.max_retries = max(0, int(max_retries))
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self.top_logprobs = int(top_logprobs)
        self.price_prompt_per_m = price_prompt_per_m
        self.price_completion_per_m = price_completion_per_m
        self.criteria = criteria
        self.extra_body = dict(extra_body or {})
        self.limiter = limiter
        self.template = template or DEFAULT_TEMPLATE
        self.choice_template = choice_template or CHOICE_TEMPLATE
        # Flipped for the rest of this backend's life when the server refuses response_format.
        self._schema_rejected = False

        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._path = parts.path.rstrip("/") + "/chat/completions"
        self._pool: queue.LifoQueue[http.client.HTTPConnection] = queue.LifoQueue()
        self._ssl = ssl.create_default_context() if self._https else None

        used = self.choice_template if mode == "logprobs" else self.template
        # Temperature and the criteria change verdicts as much as the template does; the key never enters.
        self.prompt_version = used.version(
            model,
            mode,
            structured if mode == "verdict" else "",
            repr(self.temperature),
            criteria,
            json.dumps(self.extra_body, sort_keys=True),
        )

    def __repr__(self) -> str:
        return f"OpenAIJudge(model={self.model!r}, endpoint={self.endpoint!r}, mode={self.mode!r})"

    # --- the JudgeBackend interface ----------------------------------------------------------------

    def judge(self, requests: Sequence[JudgeRequest], scheme: Scheme) -> list[JudgeOutcome]:
        """One outcome per request, same order; requests go out `concurrency` at a time."""
        if not requests:
            return []
        if self.mode == "logprobs" and scheme.kind != PAIRWISE:
            # A setting that cannot work for this project: every item fails alike, none is sent.
            error = "logprobs mode judges pairwise projects only (use mode 'verdict' for rankings)"
            return [
                JudgeOutcome(item_id=r.item.item_id, order=tuple(r.order), status="failed", error=error)
                for r in requests
            ]
        if len(requests) == 1 or self.concurrency == 1:
            return [self._judge_one(r, scheme) for r in requests]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(lambda r: self._judge_one(r, scheme), requests))

    def cost(self, outcome: JudgeOutcome) -> Decimal | None:
        """USD for one outcome from its token counts, or None without prices or usage."""
        if self.price_prompt_per_m is None and self.price_completion_per_m is None:
            return None
        if outcome.prompt_tokens is None and outcome.completion_tokens is None:
            return None
        total = Decimal(0)
        for tokens, price in (
            (outcome.prompt_tokens, self.price_prompt_per_m),
            (outcome.completion_tokens, self.price_completion_per_m),
        ):
            if tokens and price is not None:
                total += Decimal(str(price)) * tokens
        return total / Decimal(1_000_000)

    # --- any chat request -----------------------------------------------------------------------------

    def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        schema: Mapping[str, Any] | None = None,
        schema_name: str = "answer",
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> ChatReply:
        """One chat completion on this judge's endpoint and model, for prompts other than verdicts
        (e.g. `routing.features.build_tagging_messages`).

        The same HTTP path as judging: pooled keep-alive connections, the rate limiter, the API key from
        `api_key_env`, retries of 429/5xx/timeouts with backoff and jitter. `schema` goes out as
        response_format json_schema (strict) unless the judge's `structured` setting is "off" or the
        server has refused response_format before; a server that refuses it gets the request again as
        plain text. `temperature` and `max_tokens` default to the judge's settings. Thread-safe, so
        callers may send `concurrency` requests at once. Raises ChatFailed (key scrubbed).
        """
        started = time.monotonic()
        if self.api_key_env and not self._api_key:
            raise ChatFailed(f"api_key_env: environment variable {self.api_key_env} is not set where the judge runs")
        base: dict[str, Any] = {
            "messages": [{"role": str(m["role"]), "content": str(m["content"])} for m in messages],
            "max_tokens": int(max_tokens or self.max_tokens),
        }
        if temperature is not None:
            base["temperature"] = float(temperature)
        while True:
            use_schema = schema is not None and self.structured != "off" and not self._schema_rejected
            body = dict(base)
            if use_schema:
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": schema_name, "schema": dict(schema or {}), "strict": True},
                }
            try:
                completion = self._complete(body, schema_sent=use_schema)
            except _SchemaRejected:
                continue
            except _CallFailed as exc:
                raise ChatFailed(self._scrub(str(exc)), retryable=exc.retryable, retry_after=exc.retry_after) from None
            break
        choice = (completion.data.get("choices") or [{}])[0] or {}
        return ChatReply(
            text=self._scrub(_message_text((choice.get("message") or {}).get("content"))),
            finish_reason=str(choice.get("finish_reason") or ""),
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            latency_ms=round((time.monotonic() - started) * 1000),
        )

    # --- one request ---------------------------------------------------------------------------------

    def _judge_one(self, request: JudgeRequest, scheme: Scheme) -> JudgeOutcome:
        outcome = JudgeOutcome(item_id=request.item.item_id, order=tuple(request.order), status="failed")
        started = time.monotonic()
        if self.api_key_env and not self._api_key:
            outcome.error = f"api_key_env: environment variable {self.api_key_env} is not set where the judge runs"
            return outcome
        try:
            if self.mode == "logprobs":
                self._judge_logprobs(request, scheme, outcome)
            else:
                self._judge_verdict(request, scheme, outcome)
        except _CallFailed as exc:
            outcome.error = self._scrub(str(exc))
            outcome.retryable = exc.retryable
            outcome.retry_after = exc.retry_after
        except VerdictParseError as exc:
            outcome.error = self._scrub(f"unreadable verdict: {exc}")
        except Exception as exc:  # a bug or an odd reply must not sink the rest of the batch
            logger.exception("judge %s failed on item %s", self.model, request.item.item_id)
            outcome.error = self._scrub(f"{type(exc).__name__}: {exc}")
        outcome.raw_output = self._scrub(outcome.raw_output)
        outcome.latency_ms = round((time.monotonic() - started) * 1000)
        if outcome.error:
            outcome.status, outcome.labels, outcome.ranking, outcome.soft = "failed", {}, None, {}
        else:
            outcome.status = "done"
        return outcome

    def _judge_verdict(self, request: JudgeRequest, scheme: Scheme, outcome: JudgeOutcome) -> None:
        aspects = scheme.aspects
        n_shown = len(request.order)
        while True:
            use_schema = self.structured != "off" and not self._schema_rejected
            messages = build_messages(
                request, scheme, template=self.template, structured=use_schema, criteria=self.criteria
            )
            body: dict[str, Any] = {"messages": messages, "max_tokens": self.max_tokens}
            if use_schema:
                schema = verdict_schema(scheme, aspects, n_shown)
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "verdict", "schema": schema, "strict": True},
                }
            try:
                completion = self._complete(body, schema_sent=use_schema)
            except _SchemaRejected:
                continue
            break
        self._add_usage(outcome, completion)
        choice = (completion.data.get("choices") or [{}])[0]
        text = _message_text((choice.get("message") or {}).get("content"))
        outcome.raw_output = text
        try:
            parsed = parse_verdict(text, scheme, aspects, n_shown)
        except VerdictParseError as exc:
            if choice.get("finish_reason") == "length":
                raise VerdictParseError(f"{exc} (output cut at max_tokens={self.max_tokens})") from None
            raise
        labels, ranking = to_canonical(parsed, request.order)
        outcome.labels, outcome.ranking, outcome.rationale = labels, ranking, parsed.rationale

    def _judge_logprobs(self, request: JudgeRequest, scheme: Scheme, outcome: JudgeOutcome) -> None:
        swapped = request.order[0] > request.order[1]
        raw: dict[str, Any] = {}
        labels: dict[str, Label] = {}
        for aspect in scheme.aspects:
            messages = build_choice_messages(
                request, scheme, aspect, template=self.choice_template, criteria=self.criteria
            )
            body = {"messages": messages, "max_tokens": 1, "logprobs": True, "top_logprobs": self.top_logprobs}
            completion = self._complete(body, schema_sent=False)
            self._add_usage(outcome, completion)
            candidates = _top_logprobs(completion.data)
            raw[aspect] = candidates
            outcome.raw_output = json.dumps(raw)
            p_shown_a = _choice_probability(candidates)
            p_a = 1.0 - p_shown_a if swapped else p_shown_a
            outcome.soft[aspect] = p_a
            labels[aspect] = probability_to_label(p_a, scheme.scale)
        outcome.labels = labels

    @staticmethod
    def _add_usage(outcome: JudgeOutcome, completion: _Completion) -> None:
        if completion.prompt_tokens is not None:
            outcome.prompt_tokens = (outcome.prompt_tokens or 0) + completion.prompt_tokens
        if completion.completion_tokens is not None:
            outcome.completion_tokens = (outcome.completion_tokens or 0) + completion.completion_tokens

    # --- HTTP ----------------------------------------------------------------------------------------

    def _complete(self, body: dict[str, Any], *, schema_sent: bool) -> _Completion:
        """POST a chat completion, retrying transient failures; raise _CallFailed when out of tries."""
        payload = {"model": self.model, "temperature": self.temperature, **self.extra_body, **body}
        data = json.dumps(payload).encode()
        # About 4 characters a token: the limiter needs a size, not an exact count.
        estimate = len(data) // 4 + int(body.get("max_tokens") or 0)
        attempt = 0
        while True:
            if self.limiter is not None:
                self.limiter.acquire(estimate)
            try:
                status, headers, raw = self._post(data)
            except (TimeoutError, OSError, http.client.HTTPException) as exc:
                kind = "timeout" if isinstance(exc, TimeoutError) else "connection error"
                failure = _CallFailed(f"{kind}: {str(exc) or type(exc).__name__}", retryable=True)
            else:
                if status == 200:
                    try:
                        return self._read_completion(raw)
                    except _CallFailed as exc:  # a 200 with a garbled body (a proxy's page): try again
                        failure = exc
                else:
                    failure = self._http_failure(status, headers, raw, schema_sent=schema_sent)
            if attempt >= self.max_retries:
                raise failure
            if failure.retry_after is not None and failure.retry_after > self.backoff_max_s:
                # Longer than we block a worker for: hand it back to the caller to reschedule.
                raise failure
            time.sleep(
                backoff_delay(
                    attempt, base=self.backoff_base_s, cap=self.backoff_max_s, retry_after=failure.retry_after
                )
            )
            attempt += 1

    def _http_failure(
        self, status: int, headers: http.client.HTTPMessage, raw: bytes, *, schema_sent: bool
    ) -> _CallFailed:
        """The failure a non-200 reply means; raises at once for what retrying cannot fix."""
        # Scrubbed before it is cut short: a key cut in two at the cut would no longer match.
        message = self._scrub(raw.decode("utf-8", "replace"))[:500]
        refused = any(word in message.lower() for word in _SCHEMA_WORDS)
        if schema_sent and status in (400, 422) and self.structured == "auto" and refused:
            logger.warning("%s refused response_format; judging with text verdicts", self.endpoint)
            self._schema_rejected = True
            raise _SchemaRejected()
        retryable = status in _RETRYABLE_STATUS or status >= 500
        failure = _CallFailed(
            f"HTTP {status}: {message}", retryable=retryable, retry_after=_parse_retry_after(headers), status=status
        )
        if not retryable:
            raise failure
        return failure

    def _read_completion(self, raw: bytes) -> _Completion:
        try:
            data = json.loads(raw)
        except ValueError:
            raise _CallFailed(f"server sent invalid JSON: {self._scrub_bytes(raw)[:200]!r}", retryable=True) from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
            raise _CallFailed(f"server sent no choices: {self._scrub_bytes(raw)[:200]!r}", retryable=True)
        usage = data.get("usage") or {}
        prompt = usage.get("prompt_tokens")
        completion = usage.get("completion_tokens")
        return _Completion(
            data,
            prompt if isinstance(prompt, int) else None,
            completion if isinstance(completion, int) else None,
        )

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        try:
            return self._pool.get_nowait(), True
        except queue.Empty:
            pass
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout_s, context=self._ssl), False
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s), False

    def _post(self, data: bytes) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One POST on a pooled keep-alive connection. timeout_s bounds each socket wait."""
        headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "hybridpref"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        for _ in range(2):
            conn, reused = self._connection()
            try:
                conn.request("POST", self._path, body=data, headers=headers)
                response = conn.getresponse()
                raw = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if reused:
                    continue  # the server dropped an idle keep-alive connection: not a real failure
                raise
            except BaseException:
                conn.close()
                raise
            if response.will_close:
                conn.close()
            else:
                self._pool.put(conn)
            return response.status, response.headers, raw
        raise ConnectionError("connection closed twice")  # unreachable in practice: the 2nd try is fresh

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key and text else text

    def _scrub_bytes(self, raw: bytes) -> bytes:
        """_scrub for a reply's raw bytes, before they are cut short or shown."""
        if not self._api_key or not raw:
            return raw
        return raw.replace(self._api_key.encode("utf-8", "surrogatepass"), b"***")


def _message_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a content list."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _top_logprobs(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The first generated token's candidates as [{"token", "logprob"}], chat or legacy format."""
    logprobs = (data["choices"][0] or {}).get("logprobs") or {}
    content = logprobs.get("content")
    if isinstance(content, list) and content and isinstance(content[0], dict):
        top = content[0].get("top_logprobs") or []
        return [{"token": str(c.get("token", "")), "logprob": float(c.get("logprob", -math.inf))} for c in top]
    legacy = logprobs.get("top_logprobs")
    if isinstance(legacy, list) and legacy and isinstance(legacy[0], dict):
        return [{"token": str(t), "logprob": float(lp)} for t, lp in legacy[0].items()]
    raise VerdictParseError("the server returned no top_logprobs (does it support logprobs?)")


def _choice_probability(candidates: Sequence[dict[str, Any]]) -> float:
    """P(A) = softmax over the A and B candidates; a letter missing from the list counts as 0."""
    mass = {"A": 0.0, "B": 0.0}
    for c in candidates:
        letter = c["token"].strip()
        if letter in mass and math.isfinite(c["logprob"]):
            # " A" and "A" are different tokens for the same answer.
            mass[letter] += math.exp(c["logprob"])
    total = mass["A"] + mass["B"]
    if total <= 0:
        listed = ", ".join(repr(c["token"]) for c in candidates[:10])
        raise VerdictParseError(f"neither A nor B among the top tokens ({listed})")
    return mass["A"] / total


# --- configuration -------------------------------------------------------------------------------

_NUMBER = (int, float)
_CONFIG_CHECKS: dict[str, tuple[tuple[type, ...], str]] = {
    "base_url": ((str,), "an http(s) URL"),
    "api_key_env": ((str, type(None)), "the name of an environment variable"),
    "temperature": (_NUMBER, "a number >= 0"),
    "max_tokens": ((int,), "an integer >= 1"),
    "timeout_s": (_NUMBER, "a number > 0"),
    "structured": ((str,), f"one of {', '.join(STRUCTURED_MODES)}"),
    "mode": ((str,), f"one of {', '.join(MODES)}"),
    "concurrency": ((int,), "an integer >= 1"),
    "max_retries": ((int,), "an integer >= 0"),
    "backoff_base_s": (_NUMBER, "a number >= 0"),
    "backoff_max_s": (_NUMBER, "a number >= 0"),
    "top_logprobs": ((int,), "an integer 1..20"),
    "price_prompt_per_m": ((*_NUMBER, type(None)), "a number >= 0 (USD per million tokens)"),
    "price_completion_per_m": ((*_NUMBER, type(None)), "a number >= 0 (USD per million tokens)"),
    "criteria": ((str,), "text"),
    "extra_body": ((dict,), "an object of extra request fields"),
}
_RANGES: dict[str, Any] = {
    "temperature": lambda v: v >= 0,
    "max_tokens": lambda v: v >= 1,
    "timeout_s": lambda v: v > 0,
    "structured": lambda v: v in STRUCTURED_MODES,
    "mode": lambda v: v in MODES,
    "concurrency": lambda v: v >= 1,
    "max_retries": lambda v: v >= 0,
    "backoff_base_s": lambda v: v >= 0,
    "backoff_max_s": lambda v: v >= 0,
    "top_logprobs": lambda v: 1 <= v <= 20,
    "price_prompt_per_m": lambda v: v is None or v >= 0,
    "price_completion_per_m": lambda v: v is None or v >= 0,
    "base_url": lambda v: urlsplit(v).scheme in ("http", "https") and bool(urlsplit(v).hostname),
    "api_key_env": lambda v: v is None or (v.replace("_", "").isalnum() and not v[0].isdigit()),
}
# extra_body must not override what the judge itself decides.
_RESERVED_BODY = frozenset({"model", "messages", "response_format", "logprobs", "top_logprobs", "max_tokens"})


def from_config(model: str, config: Mapping[str, Any], *, limiter: Limiter | None = None) -> OpenAIJudge:
    """An OpenAIJudge from a JSON-style config; ValueError names the first bad key."""
    if not isinstance(model, str) or not model:
        raise ValueError("model: a model name is required")
    if not isinstance(config, Mapping):
        raise ValueError("config must be an object")
    if "base_url" not in config:
        raise ValueError("base_url: required (e.g. http://127.0.0.1:8000/v1)")
    for key, value in config.items():
        if key not in _CONFIG_CHECKS:
            raise ValueError(f"{key}: unknown setting (known: {', '.join(sorted(_CONFIG_CHECKS))})")
        types, expected = _CONFIG_CHECKS[key]
        # bool is an int in Python, and never a sensible value here.
        if isinstance(value, bool) or not isinstance(value, types):
            raise ValueError(f"{key}: expected {expected}, got {value!r}")
        check = _RANGES.get(key)
        if check is not None and not check(value):
            raise ValueError(f"{key}: expected {expected}, got {value!r}")
    reserved = _RESERVED_BODY & set(config.get("extra_body") or {})
    if reserved:
        raise ValueError(f"extra_body: may not set {', '.join(sorted(reserved))}")
    return OpenAIJudge(model=model, limiter=limiter, **dict(config))
