"""Configuration: file, environment and flags in that order; clear errors; redaction."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from clarion import __version__
from clarion.config import ConfigError, describe, load, redact_url

TWO_APPS = (
    '[[apps]]\nid = "1"\nkey = "k"\nsecret = "s"\n'
    '[[apps]]\nid = "{id2}"\nkey = "{key2}"\nsecret = "s"\n'
)


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "clarion.toml"
    path.write_text(text)
    return str(path)


def test_defaults_are_the_demo_app_on_6001() -> None:
    settings = load(None, env={})
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 6001)
    assert len(settings.apps) == 1
    app = settings.apps[0]
    assert (app.id, app.key, app.secret) == ("1", "app-key", "app-secret")
    assert app.enabled and app.activity_timeout == 120 and not app.client_events


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[server]\nhost = "0.0.0.0"\nport = 7000\n\n'
        '[[apps]]\nid = "42"\nkey = "k"\nsecret = "s"\nactivity_timeout = 30\n',
    )
    settings = load(path, env={})
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 7000)
    assert settings.apps[0].activity_timeout == 30
    settings = load(path, env={"CLARION_PORT": "7100", "CLARION_APP_SECRET": "env-secret"})
    assert settings.server.port == 7100
    assert (settings.apps[0].id, settings.apps[0].secret) == ("42", "env-secret")
    settings = load(path, env={"CLARION_PORT": "7100"}, flags={"port": 7200, "host": None})
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 7200)


def test_env_alone_configures_the_single_app() -> None:
    env = {"CLARION_APP_ID": "9", "CLARION_APP_KEY": "key9", "CLARION_APP_SECRET": "sec9"}
    settings = load(None, env=env)
    assert [(a.id, a.key, a.secret) for a in settings.apps] == [("9", "key9", "sec9")]


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, "[server]\nport = 7300\n")
    assert load(None, env={"CLARION_CONFIG": path}).server.port == 7300


def test_many_apps_each_with_limits(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[[apps]]\nid = "1"\nkey = "a"\nsecret = "s"\nmax_connections = 5\n'
        '[[apps]]\nid = "2"\nkey = "b"\nsecret = "s"\nclient_events = true\n',
    )
    apps = load(path, env={}).apps
    assert [(a.id, a.max_connections, a.client_events) for a in apps] == [
        ("1", 5, False),
        ("2", None, True),
    ]


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[server\n", {}, "not valid TOML"),
        ('[server]\nport = "abc"\n', {}, "port"),
        ("[server]\nport = 70000\n", {}, "port"),
        ("[server]\nbogus = 1\n", {}, "bogus"),
        ('[[apps]]\nid = "1"\nkey = "k"\n', {}, "secret"),
        ('[[apps]]\nid = "1"\nkey = "k"\nsecret = ""\n', {}, "secret"),
        (
            TWO_APPS.format(id2="1", key2="j"),
            {},
            "id",
        ),
        (
            TWO_APPS.format(id2="2", key2="k"),
            {},
            "key",
        ),
        ('[[apps]]\nid = "1"\nkey = "k"\nsecret = "s"\nactivity_timeout = 0\n', {}, "activity"),
        (
            TWO_APPS.format(id2="2", key2="j"),
            {"CLARION_APP_KEY": "x"},
            "single-app",
        ),
        ("", {"CLARION_PORT": "not-a-port"}, "port"),
        ("[server]\nhead_timeout = 0\n", {}, "head_timeout"),
        ("[server]\nmax_unfinished_heads_per_ip = -1\n", {}, "max_unfinished_heads_per_ip"),
        ("[server]\nmax_messages_per_second = 0\n", {}, "max_messages_per_second"),
        ("[server]\nreserved_files = -1\n", {}, "reserved_files"),
    ],
)
def test_invalid_configuration_is_refused_clearly(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path, env=env)
    assert message in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load("/nonexistent/clarion.toml", env={})


def test_describe_redacts_secrets(tmp_path: Path) -> None:
    path = _write(tmp_path, '[[apps]]\nid = "1"\nkey = "k"\nsecret = "supersecretvalue"\n')
    text = describe(load(path, env={}))
    assert "supersecretvalue" not in text
    assert 'key = "k"' in text and "[[apps]]" in text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:6379/0", "redis://:****@h:6379/0"),
        ("rediss://u:pw@h/0?ssl_ca_certs=/ca.pem", "rediss://u:****@h/0?ssl_ca_certs=****"),
        ("https://hooks.example/in?token=SECRET123&x", "https://hooks.example/in?token=****&x"),
        ("https://hooks.example/in#frag", "https://hooks.example/in#frag"),
        ("https://hooks.example/in?a=1#frag", "https://hooks.example/in?a=****#****"),
        ("http://127.0.0.1:8000/hook", "http://127.0.0.1:8000/hook"),
    ],
)
def test_urls_are_shown_without_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_describe_hides_a_token_in_a_webhook_url(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[[apps]]\nid = "1"\nkey = "k"\nsecret = "s3cr3t-value"\n'
        '[[apps.webhooks]]\nurl = "https://hooks.example/in?token=SECRET123"\n'
        'event_types = ["channel_occupied"]\n',
    )
    text = describe(load(path, env={}))
    assert "SECRET123" not in text
    assert "https://hooks.example/in?token=****" in text


def test_cli_version_and_config_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "clarion", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"clarion {__version__}"
    bad = _write(tmp_path, "[server]\nport = -1\n")
    out = subprocess.run(
        [sys.executable, "-m", "clarion", "serve", "--config", bad],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "configuration error" in out.stderr and "port" in out.stderr


def test_cli_prints_effective_config_without_secret(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "clarion", "config"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "", "CLARION_APP_SECRET": "do-not-print-me"},
    )
    assert "do-not-print-me" not in out.stdout
    assert 'key = "app-key"' in out.stdout


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "example.com"])
def test_demo_app_refused_on_a_reachable_host(host: str) -> None:
    with pytest.raises(ConfigError, match="demo app"):
        load(env={"CLARION_HOST": host})
    with pytest.raises(ConfigError, match="public secret"):
        load(env={"CLARION_HOST": host, "CLARION_APP_ID": "5"})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"])
def test_demo_app_served_on_loopback(host: str) -> None:
    assert [app.id for app in load(env={"CLARION_HOST": host}).apps] == ["1"]


def test_demo_app_on_a_reachable_host_when_opted_in(tmp_path: Path) -> None:
    assert load(env={"CLARION_HOST": "0.0.0.0", "CLARION_ALLOW_DEMO_APP": "1"}).apps
    config = tmp_path / "c.toml"
    config.write_text('[server]\nhost = "0.0.0.0"\nallow_demo_app = true\n')
    assert load(str(config), env={}).server.allow_demo_app
    own = {"CLARION_HOST": "0.0.0.0", "CLARION_APP_SECRET": "not-the-demo-secret"}
    assert load(env=own).apps[0].secret == "not-the-demo-secret"


def test_per_app_event_limits(tmp_path: Path) -> None:
    from clarion.apps import App

    config = tmp_path / "c.toml"
    config.write_text(
        '[[apps]]\nid = "1"\nkey = "k"\nsecret = "s"\nmax_event_payload_kb = 64\n'
        "max_event_name_length = 50\nmax_channel_name_length = 120\n"
        "max_event_channels = 20\nmax_batch_size = 25\n"
    )
    limits = App(load(str(config), env={}).apps[0]).limits
    assert limits.max_event_payload_bytes == 64 * 1024
    assert (limits.max_event_name_length, limits.max_channel_name_length) == (50, 120)
    assert (limits.max_event_channels, limits.max_batch_size) == (20, 25)
    config.write_text('[[apps]]\nid = "1"\nkey = "k"\nsecret = "s"\nmax_batch_size = 0\n')
    with pytest.raises(ConfigError, match="max_batch_size must be at least 1"):
        load(str(config), env={})
