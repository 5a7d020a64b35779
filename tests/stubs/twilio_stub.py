"""A stub of Twilio's Messages API for tests and benchmarks.

`POST /2010-04-01/Accounts/{AccountSid}/Messages.json` is checked as Twilio checks it
(twilio_rules.py: Twilio's official OpenAPI document and the rules beyond it). A valid
request gets 201 and a Message resource (sid `SM` + 32 hex); failures can be scripted
(429/20429, 500, 400/21211, 63016, 21610...: twilio_rules.Failure). With `callbacks`, the
stub then posts status callbacks (sent, delivered, read) to the request's StatusCallback,
signed like Twilio's with twilio-python's RequestValidator.

Use it in an asyncio loop (`await stub.start()` / `await stub.stop()`) or, from synchronous
code, in a background thread: `with run_in_thread(latency_s=0.15) as stub: ...`. Scripting
methods and records are thread-safe.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from tests.stubs.twilio_rules import (
    MESSAGES_PATH,
    OPENAPI_PATH,
    Failure,
    ValidationProblem,
    basic_auth,
    callback_params,
    check_auth,
    load_schema,
    message_resource,
    parse_form,
    validate,
)

# ------------------------------------------------------------------------ records


@dataclass(frozen=True)
class RecordedRequest:
    account_sid: str
    form: tuple[tuple[str, str], ...]
    auth: tuple[str, str] | None
    headers: dict[str, str]
    status: int
    sid: str = ""
    problems: tuple[str, ...] = ()
    at: float = field(default_factory=time.time)

    def get(self, name: str, default: str = "") -> str:
        return next((v for k, v in self.form if k == name), default)

    def getall(self, name: str) -> list[str]:
        return [v for k, v in self.form if k == name]

    @property
    def fields(self) -> dict[str, str]:
        """Single-valued view (the first value of each field)."""
        out: dict[str, str] = {}
        for k, v in self.form:
            out.setdefault(k, v)
        return out


@dataclass(frozen=True)
class PostedCallback:
    url: str
    params: dict[str, str]
    status: int  # the receiver's answer; 0 when it could not be reached


# ------------------------------------------------------------------------ the server


class TwilioStub:
    def __init__(
        self,
        *,
        account_sid: str = "AC" + "0" * 32,
        auth_token: str = "",
        latency_s: float = 0.0,
        callbacks: Iterable[str] = (),
        callback_delay_s: float = 0.0,
        strict: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        openapi_path: Path = OPENAPI_PATH,
        keep_requests: bool = True,
    ) -> None:
        """auth_token: when set, the basic-auth password must match it, and callbacks are
        signed with it. callbacks: statuses posted after each accepted message, in order.
        strict: also refuse what Twilio tolerates but the bridge must never send (Body or
        MediaUrl next to a ContentSid). keep_requests=False keeps only counters (benchmarks).
        """
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.latency_s = latency_s
        self.callbacks = tuple(callbacks)
        self.callback_delay_s = callback_delay_s
        self.strict = strict
        self.host = host
        self.port = port
        self.keep_requests = keep_requests
        self.schema = load_schema(openapi_path)
        # Re-entrant: wait_until's predicate reads the records while the condition is held.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._script: deque[Failure] = deque()
        self._requests: list[RecordedRequest] = []
        self._callbacks: list[PostedCallback] = []
        self.accepted = 0
        self.refused = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Open: callbacks go out as soon as a message is accepted. hold_callbacks() lets a
        # test decide when (Twilio's own first callback comes well after its answer).
        self._callback_gate = threading.Event()
        self._callback_gate.set()

    # ---------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post(MESSAGES_PATH, self._create_message)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self.url

    async def stop(self) -> None:
        self._callback_gate.set()  # no thread left waiting on it
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> TwilioStub:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------- scripting and records

    def fail_next(self, *failures: Failure) -> None:
        """The next requests (after validation) get these answers, in order."""
        with self._lock:
            self._script.extend(failures)

    def fail_times(self, n: int, failure: Failure) -> None:
        self.fail_next(*([failure] * n))

    def hold_callbacks(self) -> None:
        self._callback_gate.clear()

    def release_callbacks(self) -> None:
        self._callback_gate.set()

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._requests.clear()
            self._callbacks.clear()
            self.accepted = self.refused = 0

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def messages(self) -> list[RecordedRequest]:
        """The requests that created a message (201)."""
        return [r for r in self.requests if r.status == 201]

    @property
    def invalid(self) -> list[RecordedRequest]:
        """Requests the stub refused as malformed (not scripted failures)."""
        return [r for r in self.requests if r.problems]

    @property
    def posted_callbacks(self) -> list[PostedCallback]:
        with self._lock:
            return list(self._callbacks)

    def wait_until(self, predicate: Callable[[TwilioStub], bool], timeout_s: float = 10.0
                   ) -> bool:
        """Block (another thread runs the stub) until predicate(stub) holds or time runs out."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def _record(self, request: RecordedRequest) -> None:
        with self._changed:
            if request.status == 201:
                self.accepted += 1
            else:
                self.refused += 1
            if self.keep_requests:
                self._requests.append(request)
            self._changed.notify_all()

    # ---------------------------------------------------------------- the endpoint

    async def _create_message(self, request: web.Request) -> web.Response:
        account_sid = request.match_info["AccountSid"]
        raw = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        auth = basic_auth(request.headers.get("Authorization", ""))
        form: list[tuple[str, str]] = []
        try:
            form = parse_form(request.headers.get("Content-Type", ""), raw)
            check_auth(account_sid, auth, expected_sid=self.account_sid,
                       auth_token=self.auth_token)
            validate(self.schema, account_sid, form, strict=self.strict)
        except ValidationProblem as problem:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            self._record(RecordedRequest(account_sid, tuple(form), auth, headers,
                                         problem.failure.status, problems=(str(problem),)))
            return _error(problem.failure)
        with self._lock:
            scripted = self._script.popleft() if self._script else None
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if scripted is not None:
            self._record(RecordedRequest(account_sid, tuple(form), auth, headers,
                                         scripted.status))
            return _error(scripted)
        sid = "SM" + uuid.uuid4().hex
        fields = dict(form)
        message = message_resource(account_sid, sid, form)
        self._record(RecordedRequest(account_sid, tuple(form), auth, headers, 201, sid=sid))
        callback_url = fields.get("StatusCallback", "")
        if self.callbacks and callback_url:
            task = asyncio.ensure_future(self._post_callbacks(callback_url, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.json_response(message, status=201)

    async def _post_callbacks(self, url: str, message: dict[str, Any]) -> None:
        assert self._session is not None
        if not self._callback_gate.is_set():
            await asyncio.to_thread(self._callback_gate.wait)
        for status in self.callbacks:
            if self.callback_delay_s:
                await asyncio.sleep(self.callback_delay_s)
            params = callback_params(message, status)
            signature = RequestValidator(self.auth_token).compute_signature(url, params)
            try:
                async with self._session.post(
                        url, data=params, headers={"X-Twilio-Signature": signature}) as answer:
                    await answer.read()
                    code = answer.status
            except aiohttp.ClientError:
                code = 0
            with self._changed:
                self._callbacks.append(PostedCallback(url, params, code))
                self._changed.notify_all()


def _error(failure: Failure) -> web.Response:
    headers = {"Retry-After": failure.retry_after} if failure.retry_after else None
    return web.json_response(failure.body(), status=failure.status, headers=headers)


# ------------------------------------------------------------------------ from sync code


class StubThread:
    """Runs a TwilioStub on its own event loop in a daemon thread."""

    def __init__(self, stub: TwilioStub) -> None:
        self.stub = stub
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="twilio-stub", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> TwilioStub:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.stub.start(), self.loop).result(timeout=10)
        return self.stub

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.stub.stop(), self.loop).result(timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


@contextmanager
def run_in_thread(**kwargs: Any) -> Iterator[TwilioStub]:
    """`with run_in_thread(latency_s=0.15) as stub:` the stub serves at stub.url."""
    runner = StubThread(TwilioStub(**kwargs))
    stub = runner.start()
    try:
        yield stub
    finally:
        runner.stop()
