"""What Twilio's create-message call accepts, and what it answers: the rules of the stub in
twilio_stub.py, kept apart from the server that applies them.

Requests are checked against Twilio's official OpenAPI document (the create call's part of
it, in tests/stubs/twilio/, from twilio-oai, MIT): basic auth, the form's field names and
value types from the create-message requestBody schema, and the rules Twilio enforces beyond
the schema (To required, a From or a MessagingServiceSid, one of Body / ContentSid /
MediaUrl, ContentVariables a JSON object, a StatusCallback URL without underscores in its
host). The error codes for malformed requests follow Twilio's where one exists (21602, 21603,
21604, 21609, 21656, 20003); schema violations without a specific code answer 400 with code
20001. Scripted failures (Failure) use Twilio's error format.
"""

from __future__ import annotations

import base64
import functools
import json
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from jsonschema import Draft4Validator

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


# ------------------------------------------------------------------------ answers


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


class ValidationProblem(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.failure = Failure(status, code, message)


# ------------------------------------------------------------------------ checks


def parse_form(content_type: str, raw: bytes) -> list[tuple[str, str]]:
    """The request's form fields, in order (repeated fields kept)."""
    ctype = content_type.split(";")[0].strip()
    if ctype != "application/x-www-form-urlencoded":
        raise ValidationProblem(400, 20001, f"unsupported Content-Type {ctype!r}")
    try:
        return parse_qsl(raw.decode("utf-8"), keep_blank_values=True,
                         strict_parsing=bool(raw))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValidationProblem(400, 20001, f"malformed form body: {exc}") from None


def check_auth(account_sid: str, auth: tuple[str, str] | None, *, expected_sid: str,
               auth_token: str) -> None:
    """Basic auth as Twilio checks it: the account SID as user, its token as password
    (any password when auth_token is empty); an unknown account is a 404."""
    if auth is None:
        raise ValidationProblem(401, 20003, "Authenticate: basic auth is missing")
    user, password = auth
    if user != account_sid or (auth_token and password != auth_token):
        raise ValidationProblem(401, 20003, "Authenticate: wrong account sid or token")
    if expected_sid and account_sid != expected_sid:
        raise ValidationProblem(404, 20404, f"unknown account {account_sid}")


def validate(schema: CreateMessageSchema, account_sid: str, form: list[tuple[str, str]], *,
             strict: bool) -> None:
    """The create call's schema, then the rules Twilio enforces beyond it; strict: also
    what Twilio tolerates but the bridge must never send."""
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
    if strict and "ContentSid" in instance and (
            "Body" in instance or "MediaUrl" in instance):
        raise ValidationProblem(400, 20001, "Body and MediaUrl are superseded by ContentSid: "
                                "omit them (bridge rule)")
    callback = instance.get("StatusCallback")
    if callback is not None:
        parts = urlsplit(callback)
        if parts.scheme not in ("http", "https") or not parts.hostname \
                or "_" in parts.hostname or len(callback) > 4000:
            raise ValidationProblem(400, 21609, f"Invalid StatusCallback {callback!r}")


def message_resource(account_sid: str, sid: str, form: list[tuple[str, str]]
                     ) -> dict[str, Any]:
    """The Message resource Twilio answers a created message with."""
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


def basic_auth(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        user, sep, password = base64.b64decode(encoded).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (user, password) if sep else None
