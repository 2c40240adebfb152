"""Which server and app ``clarion trigger/channels/tail`` sign with, and how they sign."""

from __future__ import annotations

import argparse
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from clarion import cli_api
from clarion.config import ConfigError
from clarion.protocol.signing import Credentials, verify_request


def args(**given: str | None) -> argparse.Namespace:
    base: dict[str, str | None] = dict.fromkeys(("config", "url", "app_id", "key", "secret"))
    return argparse.Namespace(**{**base, **given})


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLARION_CONFIG", "CLARION_HOST", "CLARION_PORT", "CLARION_APP_ID",
                 "CLARION_APP_KEY", "CLARION_APP_SECRET"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


def test_nothing_given_is_the_servers_default() -> None:
    target = cli_api.resolve(args())
    assert target == cli_api.Target("http://127.0.0.1:6001", "1", "app-key", "app-secret")
    assert target.ws_url == "ws://127.0.0.1:6001"


def test_flags_over_the_environment_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "clarion.toml"
    config.write_text(
        '[server]\nhost = "0.0.0.0"\nport = 7000\n'
        '[[apps]]\nid = "a"\nkey = "ka"\nsecret = "sa"\n'
        '[[apps]]\nid = "b"\nkey = "kb"\nsecret = "sb"\n'
    )
    assert cli_api.resolve(args(config=str(config))) == cli_api.Target(
        "http://127.0.0.1:7000", "a", "ka", "sa"
    )
    chosen = cli_api.resolve(args(config=str(config), app_id="b"))
    assert (chosen.app_id, chosen.key, chosen.secret) == ("b", "kb", "sb")
    monkeypatch.setenv("CLARION_PORT", "7001")
    assert cli_api.resolve(args(config=str(config))).url == "http://127.0.0.1:7001"
    flagged = cli_api.resolve(args(config=str(config), url="https://rt.example/", secret="x"))
    assert (flagged.url, flagged.secret, flagged.ws_url) == (
        "https://rt.example",
        "x",
        "wss://rt.example",
    )


def test_an_unknown_app_without_credentials_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="no app to sign with"):
        cli_api.resolve(args(app_id="9"))


def test_requests_are_signed_as_the_server_checks_them(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(400, json={"error": "Bad\n things", "code": 400})

    transport = httpx.MockTransport(handler)

    def request(*a: object, **kw: object) -> httpx.Response:
        with httpx.Client(transport=transport) as client:
            return client.request(*a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(httpx, "request", request)
    target = cli_api.Target("http://h:1", "1", "key", "secret")
    with pytest.raises(cli_api.Failure, match=r"^HTTP 400: Bad things$"):
        cli_api.call(target, "POST", "/apps/1/events", {}, b'{"name":"e"}')
    with pytest.raises(cli_api.Failure):
        cli_api.call(target, "GET", "/apps/1/channels", {"info": "user_count,x"}, b"")
    for request in sent:
        url = urlsplit(str(request.url))
        params = dict(parse_qsl(url.query))
        # Raises ApiError if the signature is not the one the server computes.
        verify_request(
            request.method, url.path, params, request.content, Credentials("key", "secret"),
            float(params["auth_timestamp"]),
        )  # fmt: skip
