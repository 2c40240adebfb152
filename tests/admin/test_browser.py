"""The admin console in a real headless Chromium (Debian's ``chromium``, driven by
Playwright with the system browser's executable: no browser download).

Skipped, with the reason, when Chromium or Playwright is missing on a developer's
machine; CI sets CLARION_REQUIRE_BROWSER=1 (``.ci/run`` installs Chromium), which turns
the skip into a failure.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.admin.conftest import Admin
from tests.support.browser import TIMEOUT_MS
from tests.support.paths import ROOT
from tests.support.pusherjs import Driver
from tests.support.sdk import python_sdk


@pytest.fixture
def page(browser: Any, admin: Admin) -> Iterator[Any]:
    """A signed-in page (the printed URL opened), 1280x800."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    opened.goto(f"{admin.base}/admin/?token={admin.token}")
    assert opened.url == f"{admin.base}/admin/"
    yield opened
    context.close()


def open_app(page: Any, admin: Admin, app_id: str = "1") -> Any:
    """Open the app's page; return its Debug console once rows flow."""
    from playwright.sync_api import expect

    page.goto(f"{admin.base}/admin/apps/{app_id}")
    log = page.get_by_role("log", name="Debug console")
    expect(log).to_have_attribute("data-stream", "open")
    return log


def rows(log: Any, kind: str, *texts: str) -> Any:
    """The console's rows of type ``kind`` that contain every one of ``texts``."""
    badge = log.page.locator(".badge", has_text=re.compile(f"^{re.escape(kind)}$"))
    found = log.locator(".row").filter(has=badge)
    for text in texts:
        found = found.filter(has_text=text)
    return found


def test_sign_in_with_the_token_and_refused_with_a_wrong_one(browser: Any, admin: Admin) -> None:
    from playwright.sync_api import expect

    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{admin.base}/admin/apps/1")
    page.get_by_label("Admin token").fill("a-wrong-token-of-some-length")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong token.")
    assert not context.cookies()
    page.get_by_label("Admin token").fill(admin.token)
    page.get_by_role("button", name="Sign in").click()
    # Back on the deep link that was asked for, signed in.
    expect(page.get_by_role("log", name="Debug console")).to_be_visible()
    assert page.url == f"{admin.base}/admin/apps/1"
    cookie = context.cookies()[0]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    context.close()


def test_overview_lists_the_apps_with_live_counts(page: Any, admin: Admin) -> None:
    from playwright.sync_api import expect

    table = page.locator("#apps-table")
    expect(table.get_by_role("link", name="1", exact=True)).to_be_visible()
    expect(table).to_contain_text("Main app")
    # No cluster: the node list says it is this node alone.
    expect(page.locator("#nodes-note")).to_have_text("This node only (no cluster)")
    expect(page.locator("#nodes-table tbody tr")).to_have_count(1)
    expect(page.locator("#nodes-table")).to_contain_text("(this node)")
    page.get_by_role("link", name="1", exact=True).click()
    expect(page.get_by_role("log", name="Debug console")).to_be_visible()


def test_connection_subscribed_and_api_message_rows(
    page: Any, admin: Admin, make_driver: Callable[..., Driver]
) -> None:
    from playwright.sync_api import expect

    log = open_app(page, admin)
    client = make_driver(admin.server).client("watched")
    assert client.socket_id
    expect(rows(log, "Connection", client.socket_id)).to_have_count(1)
    client.subscribe("browser-orders")
    expect(rows(log, "Subscribed", client.socket_id, "browser-orders")).to_have_count(1)
    expect(rows(log, "Occupied", "browser-orders")).to_have_count(1)
    python_sdk(admin.server).trigger("browser-orders", "order-shipped", {"id": 7})
    row = rows(log, "API Message", "browser-orders", "order-shipped")
    expect(row).to_have_count(1)
    row.locator("summary").click()
    expect(row.locator("pre")).to_contain_text('"id"')


def test_send_an_event_from_the_form_reaches_the_subscriber(
    page: Any, admin: Admin, make_driver: Callable[..., Driver]
) -> None:
    from playwright.sync_api import expect

    log = open_app(page, admin)
    client = make_driver(admin.server).client("receiver")
    client.subscribe("browser-form")
    client.bind("browser-form", "greeting")
    form = page.get_by_role("form", name="Send an event")
    form.get_by_label("Channel").fill("browser-form")
    form.get_by_label("Event", exact=True).fill("greeting")
    form.get_by_label("Data").fill('{"text": "hello from the console"}')
    form.get_by_role("button", name="Send event").click()
    received = client.wait_event("browser-form", "greeting")
    assert received["data"] == {"text": "hello from the console"}
    expect(page.locator("#send-reply")).to_contain_text("Sent (200)")
    expect(rows(log, "API Message", "browser-form", "greeting")).to_have_count(1)
    # A refused event shows the HTTP API's own message beside the form.
    form.get_by_label("Channel").fill("not a channel!")
    form.get_by_role("button", name="Send event").click()
    expect(page.locator("#send-reply")).to_contain_text("400")


def test_client_event_and_presence_rows(
    page: Any, admin: Admin, make_driver: Callable[..., Driver]
) -> None:
    from playwright.sync_api import expect

    log = open_app(page, admin)
    driver = make_driver(admin.server)
    ann = driver.client("ann")
    bob = driver.client("bob")
    ann.subscribe("presence-browser", presence={"user_id": "ann", "user_info": {"name": "Ann"}})
    bob.subscribe("presence-browser", presence={"user_id": "bob", "user_info": {"name": "Bob"}})
    expect(rows(log, "Member added", "presence-browser")).to_have_count(2)
    ann.send_event("client-typing", {"who": "ann"}, channel="presence-browser")
    expect(rows(log, "Client Event", ann.socket_id, "client-typing")).to_have_count(1)
    bob.unsubscribe("presence-browser")
    expect(rows(log, "Member removed", "presence-browser")).to_have_count(1)
    expect(rows(log, "Unsubscribed", bob.socket_id)).to_have_count(1)


def test_channels_part_lists_a_presence_channels_members(
    page: Any, admin: Admin, make_driver: Callable[..., Driver]
) -> None:
    from playwright.sync_api import expect

    open_app(page, admin)
    client = make_driver(admin.server).client("member")
    client.subscribe("presence-lobby", presence={"user_id": "carol", "user_info": {"role": "host"}})
    page.get_by_label("Prefix").fill("presence-lobby")
    item = page.locator(".channel-item", has_text="presence-lobby")
    expect(item).to_contain_text("1 subscription · 1 user")
    item.get_by_text("Members").click()
    expect(item.locator(".members")).to_contain_text("carol")
    expect(item.locator(".members")).to_contain_text('{"role":"host"}')


def test_filter_type_boxes_and_pause(
    page: Any, admin: Admin, make_driver: Callable[..., Driver]
) -> None:
    from playwright.sync_api import expect

    log = open_app(page, admin)
    sdk = python_sdk(admin.server)
    sdk.trigger("browser-alpha", "a-event", {})
    sdk.trigger("browser-beta", "b-event", {})
    alpha = rows(log, "API Message", "browser-alpha")
    beta = rows(log, "API Message", "browser-beta")
    expect(alpha).to_have_count(1)
    expect(beta).to_have_count(1)
    page.get_by_label("Filter").fill("browser-alpha")
    expect(alpha).to_be_visible()
    expect(beta).to_be_hidden()
    page.get_by_label("Filter").fill("")
    expect(beta).to_be_visible()
    page.get_by_role("checkbox", name="API Message").uncheck()
    expect(alpha).to_be_hidden()
    page.get_by_role("checkbox", name="API Message").check()
    expect(alpha).to_be_visible()

    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    sdk.trigger("browser-alpha", "while-paused", {})
    sdk.trigger("browser-alpha", "marker", {})
    # The row after it reached the server and the page: held, not shown.
    page.wait_for_timeout(300)
    expect(rows(log, "API Message", "while-paused")).to_have_count(0)
    page.get_by_role("button", name="Resume").click()
    expect(rows(log, "API Message", "while-paused")).to_have_count(1)
    expect(rows(log, "API Message", "marker")).to_have_count(1)
    page.get_by_role("button", name="Clear").click()
    expect(log.locator(".row")).to_have_count(0)


def test_screenshots_of_the_console_and_the_overview(
    page: Any, admin: Admin, make_driver: Callable[..., Driver], tmp_path: Path
) -> None:
    """Screenshots of the console (wide and narrow) and the overview, with some traffic in
    them; CLARION_UPDATE_SCREENSHOTS=1 writes them to docs/ (admin-console.png,
    admin-overview.png), so that a test run leaves the tree as it was."""
    from playwright.sync_api import expect

    log = open_app(page, admin)
    driver = make_driver(admin.server)
    ann = driver.client("shot-ann")
    ann.subscribe("presence-team", presence={"user_id": "ann", "user_info": {"name": "Ann"}})
    ann.subscribe("orders")
    sdk = python_sdk(admin.server)
    sdk.trigger("orders", "order-created", {"id": 1042, "total": "19.90"})
    ann.send_event("client-typing", {"typing": True}, channel="presence-team")
    expect(rows(log, "Client Event", "client-typing")).to_have_count(1)
    page.get_by_label("Prefix").fill("presence-team")
    page.locator(".channel-item", has_text="presence-team").get_by_text("Members").click()
    expect(page.locator(".members")).to_contain_text("ann")
    rows(log, "API Message", "order-created").locator("summary").click()
    expect(page.locator("#live-counts")).to_contain_text("1 connection ·", timeout=5000)
    docs = ROOT / "docs" if os.environ.get("CLARION_UPDATE_SCREENSHOTS") == "1" else tmp_path
    page.screenshot(path=str(docs / "admin-console.png"))
    page.set_viewport_size({"width": 420, "height": 800})
    # The narrow layout: one column, every control reachable.
    expect(page.get_by_role("button", name="Send event")).to_be_attached()
    page.screenshot(path=str(tmp_path / "admin-console-narrow.png"))
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{admin.base}/admin/")
    expect(page.locator("#apps-table")).to_contain_text("Main app")
    page.wait_for_timeout(4500)  # more points in the chart
    page.screenshot(path=str(docs / "admin-overview.png"))
