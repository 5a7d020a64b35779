"""Settings.from_env with explicit dicts, and bridge.toml policies (pure, no os.environ)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.core.messages import Channel
from bridge.core.policy import ChannelPolicy, SolvedReply
from config.settings import DEFAULT_CONFIG_DIR, Secret, Settings, SettingsError, load_policies

SID = "AC" + "0123456789abcdef" * 2
MG = "MG" + "fedcba9876543210" * 2
# Outside development, bearer tokens have at least 32 characters.
ADMIN = "admin-token-" + "a" * 24
ALICE = "alice-token-" + "b" * 24
BOB = "bob-token-" + "c" * 24
SAME = "same-token-" + "d" * 24
KEY = "k" * 32


def test_defaults_from_an_empty_environment() -> None:
    s = Settings.from_env({})
    assert s.redis_url == "" and s.port == 8080 and s.host == "127.0.0.1"
    assert s.public_base_url == "http://127.0.0.1:8080"
    assert s.twilio_api_url == "https://api.twilio.com"
    assert not s.twilio_enabled and s.agent_tokens == {} and not s.admin_token
    assert s.config_dir == DEFAULT_CONFIG_DIR and s.redis_ssl_cert_reqs == "required"
    assert s.body_read_timeout_s == 10 and s.idle_timeout_s == 75
    # The shipped bridge.toml gives every channel the default policy.
    assert set(s.policies) == set(Channel)
    assert s.policy(Channel.WHATSAPP) == ChannelPolicy()
    assert s.policy(Channel.WIDGET).solved_reply is SolvedReply.REOPEN


def test_values_from_the_environment() -> None:
    s = Settings.from_env({
        "PORT": "9000",
        "DYNO": "web.1",
        "REDIS_URL": "rediss://:pw@redis.example.com:6380",
        "REDIS_SSL_CERT_REQS": "none",
        "PUBLIC_BASE_URL": "https://bridge.example.com/",
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_AUTH_TOKEN": "auth-token-0123",
        "TWILIO_MESSAGING_SERVICE_SID": MG,
        "TWILIO_API_URL": "http://127.0.0.1:4010/",
        "BRIDGE_ADMIN_TOKEN": ADMIN,
        "BRIDGE_AGENT_TOKENS": f"alice:{ALICE}, bob : {BOB} ,",
        "BRIDGE_SECRET": "widget-secret-0123456789abcdef-xyz",
        "BRIDGE_CONTACT_KEY": KEY,
        "BRIDGE_IDLE_TIMEOUT_S": "95",
    })
    assert s.idle_timeout_s == 95
    assert s.port == 9000 and s.host == "0.0.0.0"  # on a dyno, listen everywhere
    assert s.redis_url == "rediss://:pw@redis.example.com:6380"
    assert s.redis_ssl_cert_reqs == "none"
    assert s.public_base_url == "https://bridge.example.com"
    assert s.twilio_api_url == "http://127.0.0.1:4010"
    assert s.twilio_enabled
    assert str(s.twilio_auth_token) == "auth-token-0123"
    # Spaces around names and tokens are not part of them.
    assert {k: str(v) for k, v in s.agent_tokens.items()} == {
        "alice": ALICE, "bob": BOB}
    assert str(s.secret) == "widget-secret-0123456789abcdef-xyz"


def test_default_public_base_url_follows_the_port() -> None:
    assert Settings.from_env({"PORT": "8123"}).public_base_url == "http://127.0.0.1:8123"


def test_secrets_are_masked_in_repr() -> None:
    s = Settings.from_env({
        "TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": "auth-token-0123",
        "TWILIO_WHATSAPP_FROM": "whatsapp:+14155238886",
        "BRIDGE_ADMIN_TOKEN": ADMIN, "BRIDGE_AGENT_TOKENS": f"alice:{ALICE}",
        "BRIDGE_SECRET": "widget-secret-0123456789abcdef-xyz",
    })
    text = repr(s)
    for secret in ("auth-token-0123", ADMIN, ALICE, "widget-secret-0123456789abcdef-xyz"):
        assert secret not in text
    assert "Secret('**********')" in text
    assert repr(Secret("")) == "Secret('')" and not Secret("")
    assert repr(Secret("x")) == "Secret('**********')" and f"{Secret('x')}" == "x"
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b") and Secret("a") != "a"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"PORT": "abc"}, "PORT"),
        ({"PORT": "0"}, "PORT"),
        ({"PORT": "65536"}, "PORT"),
        ({"PORT": "-1"}, "PORT"),
        ({"REDIS_URL": "http://localhost:6379"}, "REDIS_URL"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"REDIS_SSL_CERT_REQS": "maybe"}, "REDIS_SSL_CERT_REQS"),
        ({"REDIS_MAX_CONNECTIONS": "1"}, "REDIS_MAX_CONNECTIONS"),
        ({"PUBLIC_BASE_URL": "bridge.example.com"}, "PUBLIC_BASE_URL"),
        ({"PUBLIC_BASE_URL": "ftp://bridge.example.com"}, "PUBLIC_BASE_URL"),
        ({"TWILIO_API_URL": "api.twilio.com"}, "TWILIO_API_URL"),
        ({"BRIDGE_MAX_BODY_BYTES": "10"}, "BRIDGE_MAX_BODY_BYTES"),
        ({"BRIDGE_IDLE_TIMEOUT_S": "0"}, "BRIDGE_IDLE_TIMEOUT_S"),
        ({"BRIDGE_IDLE_TIMEOUT_S": "1.5"}, "BRIDGE_IDLE_TIMEOUT_S"),
        ({"BRIDGE_AGENT_TOKENS": "alice"}, "BRIDGE_AGENT_TOKENS"),
        ({"BRIDGE_AGENT_TOKENS": "alice:short"}, "BRIDGE_AGENT_TOKENS"),
        ({"BRIDGE_AGENT_TOKENS": ":token-without-name"}, "BRIDGE_AGENT_TOKENS"),
        ({"BRIDGE_AGENT_TOKENS": "alice:        "}, "BRIDGE_AGENT_TOKENS"),
        ({"BRIDGE_AGENT_TOKENS": "alice:token-one-1,alice:token-two-2"}, "BRIDGE_AGENT_TOKENS"),
        ({"BRIDGE_ADMIN_TOKEN": SAME, "BRIDGE_AGENT_TOKENS": f"bob:{SAME}"},
         "BRIDGE_AGENT_TOKENS"),
        # Twilio sids: AC / MG followed by 32 hex digits.
        ({"TWILIO_ACCOUNT_SID": "XX" + SID[2:], "TWILIO_AUTH_TOKEN": "t"}, "TWILIO_ACCOUNT_SID"),
        ({"TWILIO_ACCOUNT_SID": "AC123", "TWILIO_AUTH_TOKEN": "t"}, "TWILIO_ACCOUNT_SID"),
        ({"TWILIO_ACCOUNT_SID": SID + " ", "TWILIO_AUTH_TOKEN": "t"}, "TWILIO_ACCOUNT_SID"),
        ({"TWILIO_ACCOUNT_SID": SID}, "TWILIO_AUTH_TOKEN"),
        ({"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": "t"}, "TWILIO_WHATSAPP_FROM"),
        ({"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": "t",
          "TWILIO_MESSAGING_SERVICE_SID": "MG123"}, "TWILIO_MESSAGING_SERVICE_SID"),
        ({"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": "t",
          "TWILIO_MESSAGING_SERVICE_SID": SID}, "TWILIO_MESSAGING_SERVICE_SID"),
        ({"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": "t",
          "TWILIO_WHATSAPP_FROM": "+14155238886"}, "TWILIO_WHATSAPP_FROM"),
    ],
)
def test_bad_environment(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "env",
    [
        {"REDIS_URL": "redis://localhost:6379/0", "BRIDGE_CONTACT_KEY": KEY},
        {"REDIS_URL": "unix:///tmp/redis.sock", "BRIDGE_CONTACT_KEY": KEY},
        {"PORT": "1"},
        {"PORT": "65535"},
        # A token alone verifies webhooks; outbound stays in the local outbox.
        {"TWILIO_AUTH_TOKEN": "t"},
        {"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": "t",
         "TWILIO_WHATSAPP_FROM": "whatsapp:+14155238886"},
        {"TWILIO_ACCOUNT_SID": "AC" + SID[2:].upper(), "TWILIO_AUTH_TOKEN": "t",
         "TWILIO_MESSAGING_SERVICE_SID": MG},
        {"BRIDGE_AGENT_TOKENS": ""},
        {"BRIDGE_AGENT_TOKENS": " , "},
    ],
)
def test_good_environment(env: dict[str, str]) -> None:
    Settings.from_env(env)


# ---------------------------------------------------------------- contact key


def test_a_process_with_a_redis_url_refuses_to_start_without_the_contact_key() -> None:
    with pytest.raises(SettingsError, match="BRIDGE_CONTACT_KEY is not set") as refused:
        Settings.from_env({"REDIS_URL": "redis://redis.example.com:6379/0"})
    assert "token_hex" in str(refused.value)  # says how to make one


def test_the_contact_key_is_long_enough_and_never_shown() -> None:
    with pytest.raises(SettingsError, match="BRIDGE_CONTACT_KEY must be at least 32"):
        Settings.from_env({"BRIDGE_CONTACT_KEY": "short"})
    s = Settings.from_env({"REDIS_URL": "redis://r:6379/0", "BRIDGE_CONTACT_KEY": KEY})
    assert s.contact_key_bytes == KEY.encode()
    assert KEY not in repr(s)


def test_development_without_redis_url_needs_no_contact_key() -> None:
    # `bridge run` (embedded Redis) generates one for its processes.
    assert not Settings.from_env({}).contact_key


def test_worker_extra_jobs_from_the_environment() -> None:
    s = Settings.from_env({"BRIDGE_WORKER_EXTRA_JOBS": "bench.outbound.noop, a.b ,"})
    assert s.worker_extra_jobs == ("bench.outbound.noop", "a.b")


# ---------------------------------------------------------------- bridge.toml


def config_dir(tmp_path: Path, text: str) -> dict[str, str]:
    (tmp_path / "bridge.toml").write_text(text, encoding="utf-8")
    return {"BRIDGE_CONFIG_DIR": str(tmp_path)}


def test_policies_from_a_config_dir(tmp_path: Path) -> None:
    env = config_dir(tmp_path, """
[defaults]
max_thread_messages = 50
csat_window_s = 3600

[channels.whatsapp]
solved_reply = "follow_up"
max_thread_age_s = 86400
""")
    s = Settings.from_env(env)
    assert s.config_dir == tmp_path
    assert s.policy(Channel.WHATSAPP) == ChannelPolicy(
        solved_reply=SolvedReply.FOLLOW_UP, max_thread_messages=50, max_thread_age_s=86400,
        csat_window_s=3600)
    assert s.policy(Channel.WIDGET) == ChannelPolicy(max_thread_messages=50, csat_window_s=3600)


def test_shipped_config_loads() -> None:
    policies = load_policies(DEFAULT_CONFIG_DIR / "bridge.toml")
    assert set(policies) == set(Channel)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[defaults]\nmax_thread_messages = 0\n", "max_thread_messages"),
        ("[defaults]\nmax_thread_messages = -5\n", "max_thread_messages"),
        ("[defaults]\nmax_thread_messages = \"ten\"\n", "max_thread_messages"),
        ("[defaults]\nmax_thread_messages = 1.5\n", "max_thread_messages"),
        ("[defaults]\nmax_thread_messages = true\n", "max_thread_messages"),
        ("[channels.whatsapp]\nmax_thread_age_s = -1\n", "max_thread_age_s"),
        ("[channels.widget]\ncsat_window_s = -1\n", "csat_window_s"),
        ("[defaults]\nsolved_reply = \"maybe\"\n", "solved_reply"),
        ("[defaults]\nsolved_reply = 1\n", "solved_reply"),
        ("[defaults]\naging_yellow_after_s = 100\naging_red_after_s = 50\n",
         "aging_yellow_after_s"),
        ("[defaults]\naging_yellow_after_s = 0\n", "aging_yellow_after_s"),
        ("[defaults]\nmax_thread_mesages = 10\n", "max_thread_mesages"),
        ("[channels.telegram]\nmax_thread_messages = 10\n", "telegram"),
        ("[channels]\nwhatsapp = 5\n", "channels.whatsapp"),
        ("defaults = 5\n", "defaults"),
        ("channels = [1, 2]\n", "channels"),
        ("[defaults\nmax_thread_messages = 10\n", "bridge.toml"),
    ],
)
def test_bad_config_names_the_setting(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(SettingsError, match=names) as info:
        Settings.from_env(config_dir(tmp_path, text))
    assert "bridge.toml" in str(info.value)


def test_missing_config_dir(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="BRIDGE_CONFIG_DIR"):
        Settings.from_env({"BRIDGE_CONFIG_DIR": str(tmp_path / "nowhere")})


def test_config_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "bridge.toml").write_bytes(b"[defaults]\n# caf\xe9\n")
    with pytest.raises(SettingsError, match=r"bridge\.toml"):
        Settings.from_env({"BRIDGE_CONFIG_DIR": str(tmp_path)})


def test_settings_are_frozen() -> None:
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]


def test_a_number_below_an_open_ended_range_names_its_minimum() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"BRIDGE_MAX_BODY_BYTES": "-5"})
    assert "BRIDGE_MAX_BODY_BYTES must be at least 1024, got -5" in str(info.value)
    assert "any" not in str(info.value)
