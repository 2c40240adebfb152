"""The connect URL rules (protocol/handshake.py): which app, or which close code, in order."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from clarion.protocol import handshake
from clarion.protocol.errors import CloseCode, ConnectRefused


@dataclass
class FakeApp:
    key: str
    enabled: bool = True


APPS = {"app-key": FakeApp("app-key"), "off-key": FakeApp("off-key", enabled=False)}


def connect(
    path: str, query: str = "protocol=7&client=js&version=8.4.0", prefix: str = ""
) -> FakeApp:
    return handshake.connect_app(path, query, prefix, APPS.get)


def refusal(path: str, query: str = "protocol=7", prefix: str = "") -> ConnectRefused:
    with pytest.raises(ConnectRefused) as caught:
        connect(path, query, prefix)
    return caught.value


def test_a_known_enabled_app_is_accepted() -> None:
    assert connect("/app/app-key") is APPS["app-key"]


def test_the_protocol_parameter_is_optional_and_5_to_7_are_spoken() -> None:
    assert connect("/app/app-key", "") is APPS["app-key"]
    for version in ("5", "6", "7"):
        assert connect("/app/app-key", f"protocol={version}") is APPS["app-key"]


def test_client_and_version_never_refuse() -> None:
    assert connect("/app/app-key", "client=anything&version=%%%&protocol=7") is APPS["app-key"]


@pytest.mark.parametrize("path", ["/app/", "/app", "/", "/apps/app-key", "/app/app-key/extra"])
def test_a_path_that_is_not_app_key_is_4005(path: str) -> None:
    refused = refusal(path)
    assert refused.code is CloseCode.PATH_NOT_FOUND
    assert path in refused.message


def test_the_path_prefix_is_part_of_the_path() -> None:
    assert connect("/ws/app/app-key", prefix="/ws") is APPS["app-key"]
    assert refusal("/app/app-key", prefix="/ws").code is CloseCode.PATH_NOT_FOUND


@pytest.mark.parametrize("version", ["4", "8", "70", "0"])
def test_a_protocol_out_of_range_is_4007(version: str) -> None:
    refused = refusal("/app/app-key", f"protocol={version}")
    assert refused.code is CloseCode.UNSUPPORTED_PROTOCOL
    assert "this server speaks 7" in refused.message


@pytest.mark.parametrize("version", ["seven", "7.0", "-7", ""])
def test_a_protocol_that_is_not_an_integer_is_4007(version: str) -> None:
    refused = refusal("/app/app-key", f"protocol={version}")
    assert refused.code is CloseCode.UNSUPPORTED_PROTOCOL
    assert "Invalid protocol version" in refused.message


def test_the_protocol_value_is_percent_decoded_and_the_first_one_counts() -> None:
    assert connect("/app/app-key", "protocol=%37") is APPS["app-key"]
    assert connect("/app/app-key", "protocol=7&protocol=9") is APPS["app-key"]
    assert refusal("/app/app-key", "protocol=9&protocol=7").code is CloseCode.UNSUPPORTED_PROTOCOL
    assert refusal("/app/app-key", "protocol=70&client=js").code is CloseCode.UNSUPPORTED_PROTOCOL


def test_an_unknown_key_is_4001() -> None:
    refused = refusal("/app/nobody")
    assert refused.code is CloseCode.APP_NOT_FOUND
    assert refused.message == "App key nobody does not exist."


def test_a_disabled_app_is_4003() -> None:
    refused = refusal("/app/off-key")
    assert refused.code is CloseCode.APP_DISABLED
    assert refused.message == "Application disabled"


def test_the_rules_apply_in_order() -> None:
    # A bad path wins over a bad protocol, which wins over an unknown or disabled app.
    assert refusal("/app/", "protocol=99").code is CloseCode.PATH_NOT_FOUND
    assert refusal("/app/nobody", "protocol=99").code is CloseCode.UNSUPPORTED_PROTOCOL
    assert refusal("/app/off-key", "protocol=x").code is CloseCode.UNSUPPORTED_PROTOCOL


def test_the_app_is_not_looked_up_when_the_url_is_refused_before() -> None:
    looked_up: list[str] = []

    def lookup(key: str) -> FakeApp | None:
        looked_up.append(key)
        return APPS.get(key)

    with pytest.raises(ConnectRefused):
        handshake.connect_app("/app/app-key", "protocol=3", "", lookup)
    assert looked_up == []
    handshake.connect_app("/app/app-key", "protocol=7", "", lookup)
    assert looked_up == ["app-key"]


def test_query_value() -> None:
    assert handshake.query_value("a=1&b=x+y&c=%2F", "b") == "x y"
    assert handshake.query_value("a=1&b=2", "c") is None
    assert handshake.query_value("flag&a=1", "flag") == ""


# --- origins ---------------------------------------------------------------------------

PATTERNS = ["https://app.example.com", "https://*.example.org", "http://localhost:3000"]


@pytest.mark.parametrize(
    "origin",
    [
        "https://app.example.com",
        "HTTPS://APP.EXAMPLE.COM",
        "https://app.example.com:443",
        "https://a.example.org",
        "https://a.b.example.org",
        "http://localhost:3000",
    ],
)
def test_allowed_origins(origin: str) -> None:
    assert handshake.origin_allowed(origin, PATTERNS)
    handshake.check_origin(origin, PATTERNS)


@pytest.mark.parametrize(
    "origin",
    [
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://app.example.com.evil.net",
        "https://example.org",
        "https://evilexample.org",
        "http://a.example.org",
        "http://localhost",
        "http://localhost:3001",
        "null",
        "",
        "https://app.example.com/path",
        "https://user@app.example.com",
        "https://app.example.com:99999",
    ],
)
def test_refused_origins(origin: str) -> None:
    assert not handshake.origin_allowed(origin, PATTERNS)
    with pytest.raises(ConnectRefused) as caught:
        handshake.check_origin(origin, PATTERNS)
    assert (caught.value.code, caught.value.message) == (
        CloseCode.UNAUTHORIZED,
        "Origin not allowed",
    )


def test_no_origin_is_never_refused_and_star_allows_any() -> None:
    handshake.check_origin(None, PATTERNS)
    handshake.check_origin(None, [])
    assert handshake.origin_allowed("null", ["*"])
    assert not handshake.origin_allowed("https://a.example.com", [])


@pytest.mark.parametrize(
    "pattern", ["*", "https://a.example.com", "https://*.example.org", "http://[::1]:8080"]
)
def test_valid_origin_patterns(pattern: str) -> None:
    assert handshake.origin_pattern_error(pattern) is None


@pytest.mark.parametrize(
    "pattern", ["example.com", "*.example.org", "https://a.*.org", "https://x/y", "https://x:0x1"]
)
def test_invalid_origin_patterns(pattern: str) -> None:
    assert handshake.origin_pattern_error(pattern)
