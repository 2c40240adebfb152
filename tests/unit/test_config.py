"""Configuration: file, environment and flags in that order; clear errors; redaction."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import msgspec
import pytest

from clarion import __version__
from clarion.config import (
    REDACTED,
    AdminSettings,
    AppConfig,
    AppsStoreSettings,
    ClusterSettings,
    ConfigError,
    MetricsSettings,
    ServerSettings,
    Settings,
    WebhookSettings,
    WebhookTarget,
    describe,
    load,
    redact_url,
)
from tests.support.paths import ROOT

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
        ('[server]\ntrusted_proxies = ["10.0.0.0/33"]\n', {}, "trusted_proxies"),
        ("", {"CLARION_TRUSTED_PROXIES": "10.0.0.0/8, nope"}, "trusted_proxies"),
        (
            '[[apps]]\nid = "1"\nkey = "k"\nsecret = "s"\nallowed_origins = ["example.com"]\n',
            {},
            "allowed_origins",
        ),
        ("[server]\nhead_timeout = 0\n", {}, "head_timeout"),
        ("[server]\nmax_unfinished_heads_per_ip = -1\n", {}, "max_unfinished_heads_per_ip"),
        ("[server]\nmax_messages_per_second = 0\n", {}, "max_messages_per_second"),
        ("[server]\nreserved_files = -1\n", {}, "reserved_files"),
        ('[cluster]\nadapter = "cluster"\n', {}, "redis-cluster"),
        ('[cluster]\nadapter = "redis-cluster"\nredis_url = "redis://h1"\n', {}, "host:port"),
        ('[cluster]\nadapter = "redis-cluster"\nprefix = "a{b"\n', {}, "'{' or '}'"),
        (
            '[cluster]\nadapter = "redis-cluster"\nredis_url = "redis://h1:7000"\n'
            'sentinels = ["127.0.0.1:26379"]\n',
            {},
            "cluster.sentinels is for adapter",
        ),
    ],
)
def test_invalid_configuration_is_refused_clearly(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path, env=env)
    assert message in str(info.value)


def test_a_redis_cluster_takes_seed_nodes(tmp_path: Path) -> None:
    text = '[cluster]\nadapter = "redis-cluster"\nredis_url = "redis://h1:7000,h2:7001"\n'
    cluster = load(_write(tmp_path, text), env={}).cluster
    assert (cluster.adapter, cluster.redis_url) == ("redis-cluster", "redis://h1:7000,h2:7001")


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
    assert f"https://hooks.example/in?token={REDACTED}" in text


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
    assert "do-not-print-me" not in out.stdout + out.stderr
    assert 'key = "app-key"' in out.stdout


def test_cli_config_output_is_toml_that_loads_once_secrets_are_back(tmp_path: Path) -> None:
    """`clarion config | python -c 'import tomllib,sys; tomllib.load(sys.stdin.buffer)'`:
    stdout is TOML alone (the banner on stderr); fed back, it gives the same settings, and
    its redacted secrets are refused until the real ones are put back."""
    source = _write(
        tmp_path,
        '[server]\nport = 7001\n[cluster]\nredis_url = "redis://:pw@h:6379/0"\n'
        '[[apps]]\nid = "1"\nkey = "k"\nsecret = "s3cr3t-value"\nmax_connections = 5\n'
        '[[apps.webhooks]]\nurl = "https://hooks.example/in?token=T0K"\n'
        'event_types = ["channel_occupied"]\nheaders = { Authorization = "Bearer B3ARER" }\n'
        '[[apps]]\nid = "2"\nkey = "k2"\nsecret = "an0ther-secret"\n',
    )
    out = subprocess.run(
        f"{sys.executable} -m clarion config --config {source} | {sys.executable} -c "
        "'import sys, tomllib; tomllib.load(sys.stdin.buffer); print(\"toml ok\")'",
        shell=True,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == "toml ok\n"
    out = subprocess.run(
        [sys.executable, "-m", "clarion", "config", "--config", source],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "effective configuration" in out.stderr
    assert "effective configuration" not in out.stdout
    for secret in ("s3cr3t-value", "an0ther-secret", ":pw@", "T0K", "B3ARER"):
        assert secret not in out.stdout
    printed = tomllib.loads(out.stdout)
    assert printed["apps"][0]["secret"] == REDACTED
    assert printed["apps"][0]["webhooks"][0]["headers"] == {"Authorization": REDACTED}
    fed_back = _write(tmp_path, out.stdout)
    with pytest.raises(ConfigError, match="is a redacted placeholder"):
        load(fed_back, env={})
    # With the real secrets (and URL) put back, it is the configuration it came from.
    restored = (
        out.stdout.replace(f'secret = "{REDACTED}"', 'secret = "s3cr3t-value"', 1)
        .replace(f'secret = "{REDACTED}"', 'secret = "an0ther-secret"', 1)
        .replace(f"redis://:{REDACTED}@", "redis://:pw@")
        .replace(f"token={REDACTED}", "token=T0K")
        .replace(f'"Authorization" = "{REDACTED}"', '"Authorization" = "Bearer B3ARER"')
    )
    assert load(_write(tmp_path, restored), env={}) == load(source, env={})


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        (
            f'[[apps]]\nid = "1"\nkey = "k"\nsecret = "{REDACTED}"\n',
            {},
            "apps[0].secret is a redacted placeholder (<redacted>, as `clarion config` prints "
            "it): put the real secret here or in CLARION_APP_SECRET",
        ),
        (
            f'[cluster]\nredis_url = "redis://:{REDACTED}@h/0"\n',
            {},
            "cluster.redis_url is a redacted placeholder",
        ),
        (
            f'[apps_store]\nurl = "postgresql://u:{REDACTED}@h/db"\n',
            {},
            "or in CLARION_APPS_STORE",
        ),
        (
            '[[apps]]\nid = "1"\nkey = "k"\nsecret = "s"\n[[apps.webhooks]]\n'
            'url = "http://h/x"\nevent_types = ["channel_occupied"]\n'
            f'headers = {{ Authorization = "{REDACTED}" }}\n',
            {},
            "apps[0].webhooks[0].headers.Authorization is a redacted placeholder",
        ),
        ("", {"CLARION_APP_SECRET": REDACTED}, "apps[0].secret is a redacted placeholder"),
    ],
)
def test_the_redacted_marker_is_refused(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(_write(tmp_path, text), env=env)
    assert message in str(info.value)


def test_a_redacted_secret_replaced_from_the_environment_is_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path, f'[[apps]]\nid = "1"\nkey = "k"\nsecret = "{REDACTED}"\n')
    assert load(path, env={"CLARION_APP_SECRET": "real"}).apps[0].secret == "real"


EXAMPLE = ROOT / "clarion.example.toml"
# Each table of the example and the Struct whose fields it must list.
SECTIONS: dict[str, type[msgspec.Struct]] = {
    "admin": AdminSettings,
    "server": ServerSettings,
    "webhooks": WebhookSettings,
    "cluster": ClusterSettings,
    "metrics": MetricsSettings,
    "apps_store": AppsStoreSettings,
    "apps": AppConfig,
    "apps.webhooks": WebhookTarget,
}


def _example_keys() -> dict[str, set[str]]:
    """The keys of each table of the example, set or commented out ("# key = ...")."""
    keys: dict[str, set[str]] = {}
    section = ""
    for line in EXAMPLE.read_text().splitlines():
        header = re.fullmatch(r"(?:# )?\[\[?([\w.]+)\]\]?", line.strip())
        if header:
            section = header.group(1)
            keys.setdefault(section, set())
            continue
        key = re.match(r"(?:# )?(\w+) = ", line)
        if key:
            keys.setdefault(section, set()).add(key.group(1))
    return keys


def test_the_example_configuration_has_every_key_and_loads() -> None:
    found = _example_keys()
    assert set(found) == set(SECTIONS)
    assert set(SECTIONS) - {"apps.webhooks"} == set(Settings.__struct_fields__)
    for section, struct in SECTIONS.items():
        fields = set(struct.__struct_fields__) - ({"webhooks"} if struct is AppConfig else set())
        assert found[section] == fields, section
    settings = load(str(EXAMPLE), env={})
    assert [(app.id, app.key) for app in settings.apps] == [("1", "my-key")]


def test_the_example_gives_each_default_it_sets() -> None:
    """A value set in the example is the default it documents (one source of truth)."""
    raw = tomllib.loads(EXAMPLE.read_text())
    for section, struct in SECTIONS.items():
        if section.startswith("apps"):
            continue
        default = struct()
        for key, value in raw[section].items():
            assert getattr(default, key) == value, f"{section}.{key}"
    app = raw["apps"][0]
    default_app = AppConfig(id="1", key="k", secret="s")
    for key, value in app.items():
        if key not in ("id", "key", "secret"):
            assert getattr(default_app, key) == value, f"apps.{key}"


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


def test_proxy_settings_from_file_and_environment(tmp_path: Path) -> None:
    assert load(None, env={}).server.trusted_proxies == []
    assert load(None, env={}).server.proxy_protocol is False
    path = _write(tmp_path, '[server]\ntrusted_proxies = ["10.0.0.0/8", "::1"]\n')
    assert load(path, env={}).server.trusted_proxies == ["10.0.0.0/8", "::1"]
    env = {
        "CLARION_TRUSTED_PROXIES": " 172.28.0.0/16 ,127.0.0.1/32,",
        "CLARION_PROXY_PROTOCOL": "1",
    }
    settings = load(None, env=env)
    assert settings.server.trusted_proxies == ["172.28.0.0/16", "127.0.0.1/32"]
    assert settings.server.proxy_protocol is True


def test_allowed_origins_default_to_any(tmp_path: Path) -> None:
    assert load(None, env={}).apps[0].allowed_origins == ["*"]
    path = _write(
        tmp_path,
        '[[apps]]\nid = "1"\nkey = "k"\nsecret = "s"\n'
        'allowed_origins = ["https://a.example.com", "https://*.example.org"]\n',
    )
    assert load(path, env={}).apps[0].allowed_origins[1] == "https://*.example.org"


def test_admin_console_settings(tmp_path: Path) -> None:
    assert load(None, env={}).admin.token is None  # off unless a token is set
    path = _write(tmp_path, '[admin]\nport = 9700\ntoken = "a-token-of-twenty-chars"\n')
    admin = load(path, env={}).admin
    assert (admin.host, admin.port, admin.token) == ("127.0.0.1", 9700, "a-token-of-twenty-chars")
    env = {"CLARION_ADMIN_TOKEN": "another-long-admin-token", "CLARION_ADMIN_PORT": "0"}
    admin = load(path, env=env).admin
    assert (admin.port, admin.token) == (0, "another-long-admin-token")
    assert "another-long-admin-token" not in describe(load(path, env=env))
    with pytest.raises(ConfigError, match="at least 16"):
        load(None, env={"CLARION_ADMIN_TOKEN": "too-short"})


def test_sentinels_from_the_environment_and_shown_without_their_passwords() -> None:
    settings = load(
        None,
        env={
            "CLARION_CLUSTER_ADAPTER": "redis",
            "CLARION_REDIS_SENTINELS": " 10.0.0.1:26379, redis://:s3cret@10.0.0.2:26379 ,",
            "CLARION_REDIS_SENTINEL_MASTER": "primary",
        },
    )
    cluster = settings.cluster
    assert cluster.sentinels == ["10.0.0.1:26379", "redis://:s3cret@10.0.0.2:26379"]
    assert cluster.sentinel_master == "primary"
    text = describe(settings)
    assert "s3cret" not in text
    assert f'"redis://:{REDACTED}@10.0.0.2:26379"' in text
    # What was printed is refused as it is, pointing at the variable to use.
    with pytest.raises(ConfigError, match=r"cluster\.sentinels\[0\] .* CLARION_REDIS_SENTINELS"):
        load(None, env={"CLARION_REDIS_SENTINELS": f"redis://:{REDACTED}@h:1"})


@pytest.mark.parametrize(
    ("cluster", "message"),
    [
        ('sentinels = ["10.0.0.1"]', r"cluster.sentinels\[0\] must be host:port"),
        ('sentinels = ["h:1", "http://h:2"]', r"cluster.sentinels\[1\] must be host:port"),
        ('sentinels = ["h:port"]', r"cluster.sentinels\[0\] must be host:port"),
        ('sentinels = ["redis://h:1/0"]', "a sentinel has no database"),
        ('sentinels = ["h:1"]\nsentinel_master = ""', "sentinel_master must name"),
        ('sentinels = ["h:1"]\nredis_url = "unix:///r.sock"', "must start with redis://"),
    ],
)
def test_bad_sentinel_settings_are_refused(tmp_path: Path, cluster: str, message: str) -> None:
    path = _write(tmp_path, f'[cluster]\nadapter = "redis"\n{cluster}\n')
    with pytest.raises(ConfigError, match=message):
        load(path, env={})

