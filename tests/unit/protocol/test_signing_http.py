"""HTTP API request signatures (docs/protocol.md §32) checked against requests the official
SDKs send.

Both SDKs are pointed at a local capture server; every request they put on the wire is fed
to :func:`signing.verify_request` exactly as received (raw path, decoded query, raw body),
with the clock set to the request's own ``auth_timestamp``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from urllib.parse import quote, unquote, urlencode

import pusher
import pytest

from clarion.protocol import signing
from clarion.protocol.errors import ApiError
from tests.support.sdk import APP_ID, KEY, SECRET, Captured, CaptureServer, capture_server, run_node

CREDENTIALS = signing.Credentials(KEY, SECRET)
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
REQUIRED = ("auth_key", "auth_timestamp", "auth_version", "auth_signature")

# --- ground truth: what the SDKs send ------------------------------------------------

PYTHON_CALLS = [
    "trigger string data",
    "trigger dict data + socket_id",
    "trigger non-ASCII data",
    "send_to_user",
    "trigger_batch",
    "channels_info",
    "channels_info with params",
    "channel_info",
    "users_info",
    "terminate_user_connections",
]

NODE_CALLS = [
    "trigger with socket_id and info",
    "trigger non-ASCII data",
    "sendToUser",
    "triggerBatch",
    "get channels",
    "get channels with params",
    "get channel",
    "get users",
    "terminateUserConnections",
    "terminateUserConnections, id needing percent-encoding",
]

NODE_SCRIPT = r"""
const Pusher = require("pusher");
const port = Number(process.argv[process.argv.length - 1]);
const p = new Pusher({ appId: "3", key: "278d425bdf160c739803", secret: "7ad3773142a6692b25b8",
  host: "127.0.0.1", port, useTLS: false });
const calls = [
  ["trigger with socket_id and info", () => p.trigger(["my-channel", "presence-room"], "my-event",
    { message: "hello world" }, { socket_id: "123.456", info: "subscription_count,user_count" })],
  ["trigger non-ASCII data", () => p.trigger("my-channel", "my-event", "Zoë 💥 日本")],
  ["sendToUser", () => p.sendToUser("user-42", "my-event", { hello: "user" })],
  ["triggerBatch", () => p.triggerBatch([
    { channel: "my-channel", name: "ev1", data: { x: 1 } },
    { channel: "presence-room", name: "ev2", data: "plain", socket_id: "123.456",
      info: "user_count" }])],
  ["get channels", () => p.get({ path: "/channels" })],
  ["get channels with params", () => p.get({ path: "/channels",
    params: { filter_by_prefix: "presence-", info: "user_count" } })],
  ["get channel", () => p.get({ path: "/channels/presence-room",
    params: { info: "user_count,subscription_count" } })],
  ["get users", () => p.get({ path: "/channels/presence-room/users" })],
  ["terminateUserConnections", () => p.terminateUserConnections("user-42")],
  ["terminateUserConnections, id needing percent-encoding",
    () => p.terminateUserConnections("user 42 é")],
];
(async () => {
  const done = [];
  for (const [title, call] of calls) { await call(); done.push(title); }
  process.stdout.write(JSON.stringify(done));
})().catch((err) => { console.error(err); process.exit(1); });
"""


@pytest.fixture(scope="module")
def capture() -> Iterator[CaptureServer]:
    with capture_server() as server:
        yield server


@pytest.fixture(scope="module")
def python_captured(capture: CaptureServer) -> dict[str, Captured]:
    start = len(capture.requests)
    client = pusher.Pusher(
        app_id=APP_ID, key=KEY, secret=SECRET, host="127.0.0.1", port=capture.port, ssl=False
    )
    client.trigger("project-3", "foo", '{"some":"data"}')
    client.trigger(
        ["my-channel", "presence-room"], "my-event", {"message": "hello world"}, socket_id="123.456"
    )
    client.trigger("my-channel", "my-event", {"text": "Zoë 💥 日本"})
    client.send_to_user("user-42", "my-event", {"hello": "user"})
    client.trigger_batch(
        [
            {"channel": "my-channel", "name": "ev1", "data": {"x": 1}},
            {
                "channel": "presence-room",
                "name": "ev2",
                "data": "plain",
                "socket_id": "123.456",
                "info": "user_count",
            },
        ]
    )
    client.channels_info()
    client.channels_info(prefix_filter="presence-", attributes=["user_count"])
    client.channel_info("presence-room", ["user_count", "subscription_count"])
    client.users_info("presence-room")
    client.terminate_user_connections("user-42")
    return dict(zip(PYTHON_CALLS, capture.requests[start:], strict=True))


@pytest.fixture(scope="module")
def node_captured(capture: CaptureServer) -> dict[str, Captured]:
    start = len(capture.requests)
    titles = run_node(NODE_SCRIPT, str(capture.port))  # one node process for the whole module
    assert titles == NODE_CALLS
    return dict(zip(NODE_CALLS, capture.requests[start:], strict=True))


ALL = [("python", t) for t in PYTHON_CALLS] + [("node", t) for t in NODE_CALLS]
IDS = [f"{sdk}: {title}" for sdk, title in ALL]
POSTS = [(sdk, title) for sdk, title in ALL if not title.startswith(("get ", "channel", "users"))]


@pytest.fixture(params=ALL, ids=IDS)
def request_(request: pytest.FixtureRequest) -> Captured:
    sdk, title = request.param
    captured: dict[str, Captured] = request.getfixturevalue(f"{sdk}_captured")
    return captured[title]


# --- helpers independent of the code under test ---------------------------------------


def expected_string_to_sign(method: str, path: str, params: dict[str, str]) -> str:
    """docs/protocol.md §32.2, written out again here so that the tests do not trust signing.py."""
    pairs = sorted((k.lower(), v) for k, v in params.items() if k != "auth_signature")
    return f"{method}\n{path}\n" + "&".join(f"{k}={v}" for k, v in pairs)


def hmac_hex(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def resigned(method: str, path: str, params: dict[str, str]) -> dict[str, str]:
    """``params`` with a correct auth_signature, so that only the change under test is wrong."""
    out = {k: v for k, v in params.items() if k != "auth_signature"}
    out["auth_signature"] = hmac_hex(SECRET, expected_string_to_sign(method, path, out))
    return out


def flip_hex(value: str) -> str:
    last = value[-1]
    return value[:-1] + ("0" if last != "0" else "1")


def params_of(req: Captured) -> dict[str, str]:
    return signing.parse_query(req.raw_query)


def verify(
    req: Captured,
    params: dict[str, str] | None = None,
    *,
    body: bytes | None = None,
    now: float | None = None,
    credentials: signing.Credentials = CREDENTIALS,
    method: str | None = None,
    path: str | None = None,
) -> None:
    params = params_of(req) if params is None else params
    signing.verify_request(
        method or req.method,
        path or req.path,
        params,
        req.body if body is None else body,
        credentials,
        int(params_of(req)["auth_timestamp"]) if now is None else now,
    )


def assert_rejected(**kwargs: object) -> ApiError:
    with pytest.raises(ApiError) as info:
        verify(**kwargs)  # type: ignore[arg-type]
    assert info.value.status == 401
    return info.value


# --- every captured request -----------------------------------------------------------


def test_sdk_request_is_accepted(request_: Captured) -> None:
    verify(request_)


def test_string_to_sign_matches_what_the_sdk_signed(request_: Captured) -> None:
    params = params_of(request_)
    # The SDKs sign the path before percent-encoding; for ordinary names it is the raw path.
    signed_path = unquote(request_.path)
    expected = expected_string_to_sign(request_.method, signed_path, params)
    assert hmac_hex(SECRET, expected) == params["auth_signature"]
    assert signing.string_to_sign(request_.method, signed_path, params) == expected
    assert signing.sign(SECRET, expected) == params["auth_signature"]


def test_signature_altered_is_rejected(request_: Captured) -> None:
    params = params_of(request_)
    params["auth_signature"] = flip_hex(params["auth_signature"])
    assert_rejected(req=request_, params=params)


def test_signature_by_another_secret_is_rejected(request_: Captured) -> None:
    assert_rejected(req=request_, credentials=signing.Credentials(KEY, "not-the-secret"))


def test_body_altered_is_rejected(request_: Captured) -> None:
    if request_.body:
        middle = len(request_.body) // 2
        changed = bytes([request_.body[middle] ^ 0x01])
        body = request_.body[:middle] + changed + request_.body[middle + 1 :]
    else:
        body = b"{}"
    assert body != request_.body
    error = assert_rejected(req=request_, body=body)
    assert "body_md5" in error.message


@pytest.mark.parametrize("skew", [-601, 601, -3600, 86400])
def test_timestamp_outside_window_is_rejected(request_: Captured, skew: int) -> None:
    now = int(params_of(request_)["auth_timestamp"]) + skew
    assert_rejected(req=request_, now=now)


@pytest.mark.parametrize("skew", [-600, 600])
def test_timestamp_at_edge_of_window_is_accepted(request_: Captured, skew: int) -> None:
    verify(request_, now=int(params_of(request_)["auth_timestamp"]) + skew)


def test_wrong_auth_key_is_rejected(request_: Captured) -> None:
    params = resigned(
        request_.method, unquote(request_.path), {**params_of(request_), "auth_key": "wrong-key"}
    )
    assert_rejected(req=request_, params=params)
    # The request is signed with the right secret but names another app's key.
    assert_rejected(req=request_, credentials=signing.Credentials("other-key", SECRET))


@pytest.mark.parametrize("version", ["1.1", "2.0", "1", ""])
def test_auth_version_other_than_1_0_is_rejected(request_: Captured, version: str) -> None:
    params = resigned(
        request_.method, unquote(request_.path), {**params_of(request_), "auth_version": version}
    )
    assert_rejected(req=request_, params=params)


@pytest.mark.parametrize("missing", REQUIRED)
def test_missing_required_param_is_rejected(request_: Captured, missing: str) -> None:
    params = params_of(request_)
    del params[missing]
    if missing != "auth_signature":
        params = resigned(request_.method, unquote(request_.path), params)
    error = assert_rejected(req=request_, params=params)
    assert missing in error.message


@pytest.mark.parametrize("key", POSTS, ids=[f"{sdk}: {title}" for sdk, title in POSTS])
def test_post_without_body_md5_is_rejected(
    request: pytest.FixtureRequest, key: tuple[str, str]
) -> None:
    request_ = request.getfixturevalue(f"{key[0]}_captured")[key[1]]
    assert request_.method == "POST"
    assert request_.body
    params = params_of(request_)
    del params["body_md5"]
    assert_rejected(req=request_, params=resigned(request_.method, request_.path, params))


def test_repeated_param_is_rejected(request_: Captured) -> None:
    for pair in request_.raw_query.split("&"):
        with pytest.raises(ApiError) as info:
            signing.parse_query(request_.raw_query + "&" + pair)
        assert info.value.status == 401


def test_extra_unsigned_param_is_rejected(request_: Captured) -> None:
    assert_rejected(req=request_, params={**params_of(request_), "info": "cache"})


def test_method_and_path_are_signed(request_: Captured) -> None:
    other = "GET" if request_.method == "POST" else "POST"
    assert_rejected(req=request_, method=other)
    assert_rejected(req=request_, path=request_.path + "x")


def test_query_order_on_the_wire_does_not_matter(request_: Captured) -> None:
    pairs = request_.raw_query.split("&")
    for reordered in (pairs[::-1], pairs[1:] + pairs[:1]):
        assert reordered != pairs
        verify(request_, params=signing.parse_query("&".join(reordered)))


def test_percent_encoded_query_values_are_decoded(request_: Captured) -> None:
    # A client that escapes the query (e.g. info=user_count%2Csubscription_count) signs the
    # same decoded values; the verifier decodes before building the string to sign.
    requoted = urlencode(list(params_of(request_).items()), quote_via=quote, safe="")
    verify(request_, params=signing.parse_query(requoted))


# --- SDK particularities ---------------------------------------------------------------


@pytest.mark.parametrize(
    "title", ["channels_info", "channels_info with params", "channel_info", "users_info"]
)
def test_python_get_with_body_md5_of_empty_string_is_accepted(
    python_captured: dict[str, Captured], title: str
) -> None:
    req = python_captured[title]
    assert req.method == "GET"
    assert req.body == b""
    assert params_of(req)["body_md5"] == EMPTY_MD5
    verify(req)
    # Any other body_md5 for an empty body is wrong, even with a fresh signature.
    params = resigned(
        "GET", req.path, {**params_of(req), "body_md5": hashlib.md5(b"{}").hexdigest()}
    )
    assert_rejected(req=req, params=params)


@pytest.mark.parametrize(
    "title", ["get channels", "get channels with params", "get channel", "get users"]
)
def test_node_get_without_body_md5_is_accepted(
    node_captured: dict[str, Captured], title: str
) -> None:
    req = node_captured[title]
    assert req.method == "GET"
    assert req.body == b""
    assert "body_md5" not in params_of(req)
    verify(req)


def test_get_params_are_signed(
    python_captured: dict[str, Captured], node_captured: dict[str, Captured]
) -> None:
    for req in (python_captured["channels_info with params"], node_captured["get channel"]):
        params = params_of(req)
        assert "info" in params
        params["info"] = "subscription_count"
        assert_rejected(req=req, params=params)


def test_python_terminate_user_connections_path_has_no_apps_prefix(
    python_captured: dict[str, Captured],
) -> None:
    req = python_captured["terminate_user_connections"]
    assert (req.method, req.path, req.body) == (
        "POST",
        "/users/user-42/terminate_connections",
        b"{}",
    )
    verify(req)
    assert_rejected(req=req, path="/apps/3/users/user-42/terminate_connections")


def test_node_terminate_user_connections_path(node_captured: dict[str, Captured]) -> None:
    req = node_captured["terminateUserConnections"]
    assert (req.method, req.path, req.body) == (
        "POST",
        "/apps/3/users/user-42/terminate_connections",
        b"{}",
    )
    verify(req)


def test_percent_encoded_path_is_verified_against_decoded_path(
    node_captured: dict[str, Captured],
) -> None:
    # The Node SDK signs "/apps/3/users/user 42 é/..." but the wire path is percent-encoded.
    req = node_captured["terminateUserConnections, id needing percent-encoding"]
    assert req.path == "/apps/3/users/user%2042%20%C3%A9/terminate_connections"
    verify(req)


def test_non_ascii_bodies_are_hashed_as_received(
    python_captured: dict[str, Captured], node_captured: dict[str, Captured]
) -> None:
    python = python_captured["trigger non-ASCII data"]
    node = node_captured["trigger non-ASCII data"]
    assert python.body.isascii()  # json.dumps escapes as \uXXXX
    assert "Zoë 💥 日本".encode() in node.body  # raw UTF-8
    for req in (python, node):
        assert params_of(req)["body_md5"] == hashlib.md5(req.body).hexdigest()
        verify(req)


# --- Pusher's documented example (docs/protocol.md §32.4), kept as a literal fixture --------

DOCS_BODY = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
DOCS_TIMESTAMP = 1353088179
DOCS_BODY_MD5 = "ec365a775a4cd0599faeb73354201b6f"
DOCS_SIGNATURE = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"


def docs_params() -> dict[str, str]:
    return {
        "auth_key": KEY,
        "auth_timestamp": str(DOCS_TIMESTAMP),
        "auth_version": "1.0",
        "body_md5": DOCS_BODY_MD5,
        "auth_signature": DOCS_SIGNATURE,
    }


def test_docs_example_body() -> None:
    assert len(DOCS_BODY) == 68
    assert hashlib.md5(DOCS_BODY).hexdigest() == DOCS_BODY_MD5


def test_docs_example_string_to_sign_and_signature() -> None:
    expected = (
        "POST\n/apps/3/events\n"
        f"auth_key={KEY}&auth_timestamp={DOCS_TIMESTAMP}&auth_version=1.0&body_md5={DOCS_BODY_MD5}"
    )
    assert signing.string_to_sign("POST", "/apps/3/events", docs_params()) == expected
    assert signing.sign(SECRET, expected) == DOCS_SIGNATURE


def test_docs_example_is_accepted() -> None:
    query = "&".join(f"{k}={v}" for k, v in docs_params().items())
    signing.verify_request(
        "POST",
        "/apps/3/events",
        signing.parse_query(query),
        DOCS_BODY,
        CREDENTIALS,
        DOCS_TIMESTAMP,
    )


@pytest.mark.parametrize(
    "change",
    ["signature", "body", "late", "early", "key", "secret", "app path"],
)
def test_docs_example_rejections(change: str) -> None:
    params, body, now = docs_params(), DOCS_BODY, DOCS_TIMESTAMP
    credentials, path = CREDENTIALS, "/apps/3/events"
    if change == "signature":
        params["auth_signature"] = flip_hex(DOCS_SIGNATURE)
    elif change == "body":
        body = DOCS_BODY.replace(b"foo", b"fop")
    elif change == "late":
        now += 601
    elif change == "early":
        now -= 601
    elif change == "key":
        credentials = signing.Credentials("178d425bdf160c739803", SECRET)
    elif change == "secret":
        credentials = signing.Credentials(KEY, "6ad3773142a6692b25b8")
    elif change == "app path":
        path = "/apps/4/events"
    with pytest.raises(ApiError) as info:
        signing.verify_request("POST", path, params, body, credentials, now)
    assert info.value.status == 401


def test_non_integer_timestamp_is_rejected() -> None:
    params = resigned("POST", "/apps/3/events", {**docs_params(), "auth_timestamp": "1353088179.0"})
    with pytest.raises(ApiError) as info:
        signing.verify_request(
            "POST", "/apps/3/events", params, DOCS_BODY, CREDENTIALS, DOCS_TIMESTAMP
        )
    assert info.value.status == 401


def test_error_message_does_not_leak_secret_or_expected_signature() -> None:
    params = {**docs_params(), "auth_signature": flip_hex(DOCS_SIGNATURE)}
    with pytest.raises(ApiError) as info:
        signing.verify_request(
            "POST", "/apps/3/events", params, DOCS_BODY, CREDENTIALS, DOCS_TIMESTAMP
        )
    assert SECRET not in info.value.message
    assert DOCS_SIGNATURE not in info.value.message
