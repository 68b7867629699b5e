"""How processes reach NATS: a seed list, one way to authenticate, TLS, secrets never shown."""

from __future__ import annotations

import pytest

from events.settings import NatsSettings, SettingsError, split_servers


def test_a_comma_separated_seed_list_is_every_server() -> None:
    settings = NatsSettings.from_env(
        {"CONVEYOR_NATS_URL": "nats://a:4222, nats://b:4222,nats://c:4222"}
    )
    assert settings.servers == ("nats://a:4222", "nats://b:4222", "nats://c:4222")
    assert settings.url == "nats://a:4222,nats://b:4222,nats://c:4222"
    assert settings.connect_options()["servers"] == list(settings.servers)


def test_flags_override_the_environment() -> None:
    env = {"CONVEYOR_NATS_URL": "nats://env:4222", "CONVEYOR_NATS_TOKEN": "t0k"}
    settings = NatsSettings.from_env(env, servers="nats://flag:4222")
    assert settings.servers == ("nats://flag:4222",)
    assert settings.connect_options()["token"] == "t0k"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CONVEYOR_NATS_URL": "http://a:4222"}, "is not a URL like nats://host:4222"),
        ({"CONVEYOR_NATS_URL": " , "}, "no NATS server given"),
        ({"CONVEYOR_NATS_USER": "u"}, "user and password go together"),
        (
            {"CONVEYOR_NATS_TOKEN": "t", "CONVEYOR_NATS_CREDS": "/x.creds"},
            "one way to authenticate to NATS, not token and creds file",
        ),
        ({"CONVEYOR_NATS_TLS_CERT": "/c.pem"}, "certificate and its key go together"),
        ({"CONVEYOR_NATS_PING_INTERVAL": "soon"}, "PING_INTERVAL must be a number of seconds"),
        ({"CONVEYOR_NATS_PING_INTERVAL": "0"}, "PING_INTERVAL must be seconds from above 0"),
    ],
)
def test_settings_that_cannot_work_say_why(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        NatsSettings.from_env(env)


def test_a_missing_credentials_file_is_named() -> None:
    settings = NatsSettings.from_env({"CONVEYOR_NATS_CREDS": "/nonexistent/user.creds"})
    with pytest.raises(SettingsError, match="CONVEYOR_NATS_CREDS: no such file '/nonexistent"):
        settings.connect_options()


def test_secrets_are_masked_and_never_in_repr() -> None:
    settings = NatsSettings.from_env(
        {"CONVEYOR_NATS_USER": "svc", "CONVEYOR_NATS_PASSWORD": "hunter2"}
    )
    assert settings.redacted()["password"] == "***"
    assert settings.redacted()["user"] == "svc"
    assert "hunter2" not in repr(settings)
    assert settings.env()["CONVEYOR_NATS_PASSWORD"] == "hunter2"  # for child processes only


def test_a_silent_server_is_pinged_every_few_seconds_and_the_setting_reaches_children() -> None:
    """nats-py's default (120 s, two unanswered) would keep a process on a frozen server for
    minutes; the interval is passed on to child processes with the rest."""
    default = NatsSettings.from_env({})
    options = default.connect_options()
    assert (options["ping_interval"], options["max_outstanding_pings"]) == (5.0, 2)
    tuned = NatsSettings.from_env({"CONVEYOR_NATS_PING_INTERVAL": "1.5"})
    assert tuned.connect_options()["ping_interval"] == 1.5
    assert NatsSettings.from_env(tuned.env()) == tuned


def test_split_servers_drops_blanks() -> None:
    assert split_servers("a:1,,b:2 ,") == ("a:1", "b:2")
