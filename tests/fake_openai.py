"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests and benchmarks (no mocks).

It speaks POST /v1/chat/completions and GET /v1/models on a free port, in a background thread,
and records every request it receives (`fake.requests`: path, headers, parsed JSON body).

Deterministic mode (no script, or once the script runs out) answers every request after `delay_s`
with a valid verdict for whatever the prompt asked: the aspects and scale of a pairwise prompt (text
lines or JSON under response_format), a ranking, a one-letter choice, or logprobs::

    with FakeOpenAI(delay_s=0.05, verdict="A") as fake:        # 50 ms per request, shown A wins
        judge = OpenAIJudge(base_url=fake.url, model="fake")

`verdict` is who wins: "A" / "B" (the shown response, clearly), "tie", or "longer" (the longer
shown response, so both orders agree on the canonical winner: good for end-to-end tests).

Scripted mode: `script` is a list of `Reply`s served in order, one per chat request, or a callable
`(Received) -> Reply | None` (None: the deterministic verdict)::

    with FakeOpenAI(script=[rate_limited(0.1), rate_limited(0.1), chat_reply("overall: Tie")]) as fake:
        ...
    with FakeOpenAI(script=lambda req: error_reply(500)) as fake:    # 500 forever
        ...
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LIKERT5_LABELS = ("A-is-clearly-better", "A-is-slightly-better", "Tie", "B-is-slightly-better", "B-is-clearly-better")


@dataclass
class Reply:
    """One scripted answer. `body`: a dict (sent as JSON), or str/bytes sent as they are."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # None: the server's delay_s.
    delay_s: float | None = None


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None
    at: float  # time.monotonic() on arrival

    @property
    def messages(self) -> list[dict[str, str]]:
        return list((self.body or {}).get("messages") or [])

    @property
    def prompt(self) -> str:
        """The last user message."""
        users = [m.get("content", "") for m in self.messages if m.get("role") == "user"]
        return users[-1] if users else ""


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_reply(
    content: str,
    *,
    prompt_tokens: int = 100,
    completion_tokens: int = 20,
    finish_reason: str = "stop",
    logprobs: Any = None,
    delay_s: float | None = None,
) -> Reply:
    """A successful chat completion whose message is `content`."""
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "finish_reason": finish_reason,
    }
    if logprobs is not None:
        choice["logprobs"] = logprobs
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": "fake",
        "choices": [choice],
        "usage": _usage(prompt_tokens, completion_tokens),
    }
    return Reply(200, body, delay_s=delay_s)


def json_verdict(labels: dict[str, Any], rationale: str = "Scripted JSON verdict.", **kwargs: Any) -> Reply:
    """A structured verdict: {"rationale": ..., "labels": {...}}."""
    return chat_reply(json.dumps({"rationale": rationale, "labels": labels}), **kwargs)


def logprobs_reply(top: dict[str, float], **kwargs: Any) -> Reply:
    """A max_tokens=1 completion listing `top` ({token: probability}) as the first token's top_logprobs."""
    ranked = sorted(top.items(), key=lambda kv: -kv[1])
    candidates = [{"token": t, "logprob": math.log(p) if p > 0 else -9999.0, "bytes": None} for t, p in ranked]
    first = ranked[0][0] if ranked else ""
    content = [{"token": first, "logprob": candidates[0]["logprob"] if candidates else 0.0, "top_logprobs": candidates}]
    kwargs.setdefault("completion_tokens", 1)
    return chat_reply(first, logprobs={"content": content}, finish_reason="length", **kwargs)


def error_reply(status: int, message: str = "", *, retry_after: float | str | None = None, **headers: str) -> Reply:
    """An OpenAI-style error body, with a Retry-After header when given."""
    out = {k.replace("_", "-"): v for k, v in headers.items()}
    if retry_after is not None:
        out["Retry-After"] = str(retry_after)
    body = {"error": {"message": message or f"fake error {status}", "type": "fake", "code": status}}
    return Reply(status, body, out)


def rate_limited(retry_after: float | str | None = 0.05) -> Reply:
    return error_reply(429, "Rate limit reached for requests", retry_after=retry_after)


def schema_rejected(status: int = 400) -> Reply:
    """What a server without structured outputs says to response_format json_schema."""
    return error_reply(status, "response_format type 'json_schema' is not supported by this server")


# --- deterministic verdicts ---------------------------------------------------------------------

_RESPONSE_RE = re.compile(r"\[The Start of Response ([A-Z])\]\n(.*?)\n\[The End of Response \1\]", re.DOTALL)
_ASPECT_LINE_RE = re.compile(r"^([\w-]+): <(label|number)>$", re.MULTILINE)


def _shown(prompt: str) -> list[tuple[str, str]]:
    return _RESPONSE_RE.findall(prompt)


def _winner(verdict: str, prompt: str) -> str:
    """ "A", "B" or "" (tie) on the shown order."""
    if verdict == "longer":
        shown = _shown(prompt)
        if len(shown) >= 2 and len(shown[0][1]) != len(shown[1][1]):
            return "A" if len(shown[0][1]) > len(shown[1][1]) else "B"
        return ""
    return {"A": "A", "B": "B"}.get(verdict, "")


def _label(winner: str, numeric: bool) -> Any:
    if numeric:
        return {"A": -3, "B": 3}.get(winner, 0)
    return {"A": LIKERT5_LABELS[0], "B": LIKERT5_LABELS[4]}.get(winner, "Tie")


def _ranking(verdict: str, prompt: str, n: int) -> list[str]:
    shown = _shown(prompt)
    letters = [letter for letter, _ in shown] or [chr(ord("A") + i) for i in range(n)]
    if verdict == "longer":
        lengths = dict(shown)
        return sorted(letters, key=lambda letter: -len(lengths.get(letter, "")))
    return letters[::-1] if verdict == "B" else letters


def deterministic_reply(received: Received, verdict: str = "A") -> Reply:
    """A valid answer to whatever a judge prompt asked (see the module docs)."""
    body = received.body or {}
    prompt = received.prompt
    prompt_tokens = sum(len(m.get("content") or "") for m in received.messages) // 4
    winner = _winner(verdict, prompt)
    if body.get("logprobs"):
        p_a = {"A": 0.9, "B": 0.1}.get(winner, 0.5)
        return logprobs_reply({"A": p_a, "B": 1.0 - p_a, " A": p_a / 100}, prompt_tokens=prompt_tokens)
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")
    if schema:
        props = schema.get("properties", {})
        if "ranking" in props:
            n = int(props["ranking"].get("maxItems") or len(props["ranking"]["items"]["enum"]))
            content = json.dumps({"rationale": "Deterministic fake ranking.", "ranking": _ranking(verdict, prompt, n)})
        else:
            aspects = props["labels"]["properties"]
            numeric = {a: isinstance(spec["enum"][0], int) for a, spec in aspects.items()}
            labels = {a: _label(winner, numeric[a]) for a in aspects}
            content = json.dumps({"rationale": "Deterministic fake verdict.", "labels": labels})
    elif "ranking: <best letter>" in prompt:
        n = len(_shown(prompt)) or 2
        content = "Rationale: Deterministic fake ranking.\nranking: " + " > ".join(_ranking(verdict, prompt, n))
    elif _ASPECT_LINE_RE.search(prompt):
        lines = [f"{a}: {_label(winner, kind == 'number')}" for a, kind in _ASPECT_LINE_RE.findall(prompt)]
        content = "Rationale: Deterministic fake verdict.\n" + "\n".join(lines)
    else:
        # A one-letter choice prompt, or one this fake does not know: MT-Bench style.
        letter = winner or "A"
        content = letter if prompt.rstrip().endswith("letter A or B.") else f"[[{winner or 'C'}]]"
    return chat_reply(content, prompt_tokens=prompt_tokens, completion_tokens=max(1, len(content) // 4))


# --- the server ---------------------------------------------------------------------------------


class FakeOpenAI:
    """The server. Start with `with FakeOpenAI(...) as fake:` (or start()/stop()); `fake.url` ends in /v1."""

    def __init__(
        self,
        script: Sequence[Reply] | Callable[[Received], Reply | None] | None = None,
        *,
        delay_s: float = 0.0,
        verdict: str = "A",
        api_key: str | None = None,
        model: str = "fake-judge",
        hold_until_in_flight: int = 0,
    ) -> None:
        """hold_until_in_flight: each chat request waits (up to 30 s) until that many are in the server at
        once before it answers, so that a count of concurrent requests does not depend on how fast a busy
        machine starts the client's threads."""
        if verdict not in ("A", "B", "tie", "longer"):
            raise ValueError("verdict is one of 'A', 'B', 'tie', 'longer'")
        self._queue: deque[Reply] = deque()
        self._script: Callable[[Received], Reply | None] | None = None
        if callable(script):
            self._script = script
        elif script is not None:
            self._queue.extend(script)
        self.delay_s = delay_s
        self.verdict = verdict
        self.api_key = api_key
        self.model = model
        self.requests: list[Received] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.hold_until_in_flight = hold_until_in_flight
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---

    @property
    def url(self) -> str:
        """Base URL for an OpenAI client: http://127.0.0.1:PORT/v1."""
        if self._server is None:
            raise RuntimeError("the fake server is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> FakeOpenAI:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self), bind_and_activate=False)
        # The default listen backlog of 5 drops connections when 16 workers connect at once, and
        # the kernel's SYN retry then adds a second to each of them.
        server.request_queue_size = 256
        server.server_bind()
        server.server_activate()
        server.daemon_threads = True
        # Clients hanging up on a slow reply (timeouts) are expected here, not errors worth printing.
        server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping through a scripted delay
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:  # keep-alive connections would otherwise hold a handler thread each
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- scripting ---

    def push(self, *replies: Reply) -> None:
        """Queue more scripted replies."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def chat_requests(self) -> list[Received]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def _answer(self, received: Received) -> Reply:
        with self._lock:
            scripted = self._queue.popleft() if self._queue else None
        if scripted is None and self._script is not None:
            scripted = self._script(received)
        return scripted if scripted is not None else deterministic_reply(received, self.verdict)


def _make_handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
        timeout = 30  # an idle keep-alive connection frees its thread after this
        # Headers and body go out in two writes; with Nagle on, delayed ACKs add ~40 ms to each reply.
        disable_nagle_algorithm = True

        def setup(self) -> None:
            super().setup()
            with fake._lock:
                fake._sockets.add(self.connection)

        def finish(self) -> None:
            with fake._lock:
                fake._sockets.discard(self.connection)
            with contextlib.suppress(OSError):
                super().finish()

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            if isinstance(body, bytes):
                data = body
            elif isinstance(body, str):
                data = body.encode()
            else:
                data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                self.close_connection = True  # the client gave up (e.g. its timeout fired)

        def _record(self, body: Any) -> Received:
            received = Received(
                self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()
            )
            with fake._lock:
                fake.requests.append(received)
            return received

        def _authorised(self) -> bool:
            if fake.api_key is None or self.headers.get("Authorization") == f"Bearer {fake.api_key}":
                return True
            self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
            return False

        def do_GET(self) -> None:
            self._record(None)
            if not self._authorised():
                return
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, {"object": "list", "data": [{"id": fake.model, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            received = self._record(body)
            if not self._authorised():
                return
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            if not isinstance(body, dict) or "messages" not in body:
                self._send(400, {"error": {"message": "body must be JSON with messages"}})
                return
            with fake._arrived:
                fake.in_flight += 1
                fake.peak_in_flight = max(fake.peak_in_flight, fake.in_flight)
                fake._arrived.notify_all()
                if fake.hold_until_in_flight:
                    fake._arrived.wait_for(lambda: fake.peak_in_flight >= fake.hold_until_in_flight, timeout=30)
            try:
                reply = fake._answer(received)
                delay = fake.delay_s if reply.delay_s is None else reply.delay_s
                if delay > 0 and fake._stopping.wait(delay):
                    self.close_connection = True
                    return
                self._send(reply.status, reply.body if reply.body is not None else {}, reply.headers)
            finally:
                with fake._lock:
                    fake.in_flight -= 1

    return Handler
