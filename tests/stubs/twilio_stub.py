"""A stub of Twilio's Messages API for tests and benchmarks.

`POST /2010-04-01/Accounts/{AccountSid}/Messages.json` is checked against Twilio's official
OpenAPI document (the create call's part of it, in tests/stubs/twilio/, from twilio-oai, MIT): basic
auth, the form's field names and value types from the create-message requestBody schema, and
the rules Twilio enforces beyond the schema (To required, a From or a MessagingServiceSid, one
of Body / ContentSid / MediaUrl, ContentVariables a JSON object, a StatusCallback URL without
underscores in its host). A valid request gets 201 and a Message resource (sid `SM` + 32 hex);
failures can be scripted (429/20429, 500, 400/21211, 63016, 21610...). With `callbacks`, the
stub then posts status callbacks (sent, delivered, read) to the request's StatusCallback,
signed like Twilio's with twilio-python's RequestValidator.

Use it in an asyncio loop (`await stub.start()` / `await stub.stop()`) or, from synchronous
code, in a background thread: `with run_in_thread(latency_s=0.15) as stub: ...`. Scripting
methods and records are thread-safe.

The error codes for malformed requests follow Twilio's where one exists (21602, 21603, 21604,
21609, 21656, 20003); schema violations without a specific code answer 400 with code 20001.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
from aiohttp import web
from jsonschema import Draft4Validator
from twilio.request_validator import RequestValidator

# The create call and the schemas it references, cut from twilio-oai's twilio_api_v2010.json
# by tests/stubs/twilio/extract.py (provenance in the file's info block, licence beside it).
OPENAPI_PATH = Path(__file__).resolve().parent / "twilio" / "messages_create.json"
MESSAGES_PATH = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
API_VERSION = "2010-04-01"


# ------------------------------------------------------------------------ the official schema


@dataclass(frozen=True)
class CreateMessageSchema:
    properties: dict[str, Any]
    required: tuple[str, ...]
    account_sid_schema: dict[str, Any]
    validator: Draft4Validator

    def array_fields(self) -> frozenset[str]:
        return frozenset(k for k, v in self.properties.items() if v.get("type") == "array")


@functools.lru_cache(maxsize=4)
def load_schema(path: Path = OPENAPI_PATH) -> CreateMessageSchema:
    """The create-message operation's form schema, with the document's components so its
    $refs resolve."""
    if not path.exists():
        raise FileNotFoundError(
            f"Twilio's OpenAPI document is not at {path} (see tests/stubs/twilio/extract.py)")
    document = json.loads(path.read_text(encoding="utf-8"))
    operation = document["paths"][MESSAGES_PATH]["post"]
    schema = operation["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    account = next(p for p in operation["parameters"] if p["name"] == "AccountSid")
    root = {**schema, "components": document["components"]}
    return CreateMessageSchema(
        properties=dict(schema["properties"]),
        required=tuple(schema.get("required", ())),
        account_sid_schema=account["schema"],
        validator=Draft4Validator(root),
    )


# ------------------------------------------------------------------------ scripted answers


@dataclass(frozen=True)
class Failure:
    """One scripted error answer, in Twilio's error format."""

    status: int
    code: int
    message: str = "scripted failure"
    retry_after: str | None = None

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "status": self.status,
                "more_info": f"https://www.twilio.com/docs/errors/{self.code}"}


TOO_MANY_REQUESTS = Failure(429, 20429, "Too Many Requests")
SERVER_ERROR = Failure(500, 20500, "Internal Server Error")
SERVICE_UNAVAILABLE = Failure(503, 20503, "Service Unavailable")
INVALID_TO = Failure(400, 21211, "Invalid 'To' Phone Number")
OUTSIDE_WINDOW = Failure(
    400, 63016, "Failed to send freeform message because you are outside the allowed window. "
    "If you are using WhatsApp, please use a Message Template.")
OPTED_OUT = Failure(400, 21610, "Attempt to send to unsubscribed recipient")
CHANNEL_RATE_LIMIT = Failure(429, 63018, "Rate limit exceeded for Channel")


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


class ValidationProblem(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.failure = Failure(status, code, message)


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
        auth = _basic_auth(request.headers.get("Authorization", ""))
        form: list[tuple[str, str]] = []
        try:
            form = self._parse(request, raw)
            self._check_auth(account_sid, auth)
            self._validate(account_sid, form)
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
        message = self._message(account_sid, sid, form)
        self._record(RecordedRequest(account_sid, tuple(form), auth, headers, 201, sid=sid))
        callback_url = fields.get("StatusCallback", "")
        if self.callbacks and callback_url:
            task = asyncio.ensure_future(self._post_callbacks(callback_url, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.json_response(message, status=201)

    def _parse(self, request: web.Request, raw: bytes) -> list[tuple[str, str]]:
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        if ctype != "application/x-www-form-urlencoded":
            raise ValidationProblem(400, 20001, f"unsupported Content-Type {ctype!r}")
        try:
            return parse_qsl(raw.decode("utf-8"), keep_blank_values=True,
                             strict_parsing=bool(raw))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValidationProblem(400, 20001, f"malformed form body: {exc}") from None

    def _check_auth(self, account_sid: str, auth: tuple[str, str] | None) -> None:
        if auth is None:
            raise ValidationProblem(401, 20003, "Authenticate: basic auth is missing")
        user, password = auth
        if user != account_sid or (self.auth_token and password != self.auth_token):
            raise ValidationProblem(401, 20003, "Authenticate: wrong account sid or token")
        if self.account_sid and account_sid != self.account_sid:
            raise ValidationProblem(404, 20404, f"unknown account {account_sid}")

    def _validate(self, account_sid: str, form: list[tuple[str, str]]) -> None:
        schema = self.schema
        account_errors = list(Draft4Validator(schema.account_sid_schema).iter_errors(account_sid))
        if account_errors:
            raise ValidationProblem(400, 20001, f"AccountSid: {account_errors[0].message}")
        instance: dict[str, Any] = {}
        arrays = schema.array_fields()
        for name, value in form:
            prop = schema.properties.get(name)
            if prop is None:
                raise ValidationProblem(400, 20001, f"unknown parameter {name!r}")
            if name in arrays:
                instance.setdefault(name, []).append(value)
            elif name in instance:
                raise ValidationProblem(400, 20001, f"parameter {name!r} given twice")
            else:
                instance[name] = _coerce(value, prop)
        errors = sorted(schema.validator.iter_errors(instance), key=lambda e: list(e.path))
        if errors:
            where = ".".join(str(p) for p in errors[0].path) or "form"
            code = 21604 if "'To' is a required property" in errors[0].message else 20001
            raise ValidationProblem(400, code, f"{where}: {errors[0].message}")
        if not instance.get("From") and not instance.get("MessagingServiceSid"):
            raise ValidationProblem(400, 21603, "A 'From' phone number is required.")
        if not (instance.get("Body") or instance.get("ContentSid") or instance.get("MediaUrl")):
            raise ValidationProblem(400, 21602, "Message body is required.")
        sender = str(instance.get("From", ""))
        if sender and sender.startswith("whatsapp:") != str(instance["To"]).startswith(
                "whatsapp:"):
            raise ValidationProblem(400, 21211, "To and From must both be whatsapp: addresses")
        if "ContentVariables" in instance:
            if "ContentSid" not in instance:
                raise ValidationProblem(400, 21656, "ContentVariables needs a ContentSid")
            try:
                variables = json.loads(instance["ContentVariables"])
            except ValueError:
                variables = None
            if not isinstance(variables, dict):
                raise ValidationProblem(400, 21656, "ContentVariables must be a JSON object")
        if self.strict and "ContentSid" in instance and (
                "Body" in instance or "MediaUrl" in instance):
            raise ValidationProblem(400, 20001, "Body and MediaUrl are superseded by ContentSid: "
                                    "omit them (bridge rule)")
        callback = instance.get("StatusCallback")
        if callback is not None:
            parts = urlsplit(callback)
            if parts.scheme not in ("http", "https") or not parts.hostname \
                    or "_" in parts.hostname or len(callback) > 4000:
                raise ValidationProblem(400, 21609, f"Invalid StatusCallback {callback!r}")

    def _message(self, account_sid: str, sid: str, form: list[tuple[str, str]]
                 ) -> dict[str, Any]:
        fields = dict(form)
        media = [v for k, v in form if k == "MediaUrl"]
        service = fields.get("MessagingServiceSid")
        now = formatdate(usegmt=True)
        return {
            "account_sid": account_sid,
            "api_version": API_VERSION,
            "body": fields.get("Body", ""),
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": fields.get("From"),
            "messaging_service_sid": service,
            "num_media": str(len(media)),
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            # Twilio: "accepted" through a Messaging Service, "queued" otherwise.
            "status": "accepted" if service else "queued",
            "subresource_uris": {
                "media": f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}/Media.json"},
            "to": fields.get("To"),
            "uri": f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json",
        }

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


def callback_params(message: dict[str, Any], status: str, *, error_code: str = ""
                    ) -> dict[str, str]:
    """The form Twilio posts to a StatusCallback for a WhatsApp message."""
    to = str(message.get("to") or "")
    params = {
        "MessageSid": message["sid"], "SmsSid": message["sid"],
        "MessageStatus": status, "SmsStatus": status,
        "AccountSid": message["account_sid"], "ApiVersion": API_VERSION,
        "From": str(message.get("from") or ""), "To": to,
        "ChannelPrefix": "whatsapp", "ChannelToAddress": to.removeprefix("whatsapp:"),
    }
    if message.get("messaging_service_sid"):
        params["MessagingServiceSid"] = str(message["messaging_service_sid"])
    if status in ("delivered", "read", "undelivered"):
        params["EventType"] = status.upper()
    if error_code:
        params["ErrorCode"] = error_code
    return params


def _coerce(value: str, prop: dict[str, Any]) -> Any:
    """Form values are text; give the schema the types it declares where they parse."""
    kind = prop.get("type")
    if kind == "boolean" and value in ("true", "false", "True", "False"):
        return value.lower() == "true"
    if kind == "integer":
        try:
            return int(value)
        except ValueError:
            return value
    if kind == "number":
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _basic_auth(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        user, sep, password = base64.b64decode(encoded).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


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
