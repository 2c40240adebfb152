"""The example chat end to end in headless Chromium: two people, each in a browser
context of their own (own cookies), on the page the backend serves, through the embedded
Clarion. Skipped without Chromium or Playwright (required in CI), see tests.support.browser.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.examples.conftest import Chat
from tests.support.browser import TIMEOUT_MS, launched_browser
from tests.support.paths import ROOT
from tests.support.polling import until


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launched_browser()


@pytest.fixture
def open_page(browser: Any, chat: Chat) -> Iterator[Any]:
    """``open_page()``: the chat in a new browser context (a new person), 1100x700."""
    contexts: list[Any] = []

    def open_() -> Any:
        context = browser.new_context(viewport={"width": 1100, "height": 700})
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.goto(chat.base + "/")
        return page

    yield open_
    for context in contexts:
        context.close()


def sign_in(page: Any, name: str) -> None:
    from playwright.sync_api import expect

    page.get_by_label("Your name").fill(name)
    page.get_by_role("button", name="Join").click()
    expect(page.get_by_text("Signed in as")).to_contain_text(name)
    expect(page.locator("#connection")).to_have_text("connected")


def online(page: Any) -> Any:
    return page.get_by_role("list", name=re.compile(r"^Online")).get_by_role("listitem")


def test_two_people_chat_see_each_other_and_the_typing_indicator(
    open_page: Any, chat: Chat, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    ada, bob = open_page(), open_page()
    expect(ada.get_by_role("heading", name="Join the chat")).to_be_visible()
    sign_in(ada, "Ada")
    expect(online(ada)).to_have_text(["Ada (you)"])
    sign_in(bob, "Bob")
    # Both see both, each marked on their own page.
    expect(online(bob)).to_have_text(["Ada", "Bob (you)"])
    expect(online(ada)).to_have_text(["Ada (you)", "Bob"])
    expect(ada.get_by_role("heading", name=re.compile("Online"))).to_have_text("Online (2)")

    # The presence channel's webhooks reached the backend, their signatures checked.
    def members_added() -> list[Any]:
        return [e for e in chat.app.state.webhook_log if e["name"] == "member_added"]

    until(lambda: len(members_added()) == 2, what="member_added webhooks for Ada and Bob")
    assert {e["channel"] for e in members_added()} == {"presence-chat"}

    # Bob types: a client event on the room, which Ada sees and Bob does not.
    bob.get_by_role("textbox", name="Message").press_sequentially("Hello Ada, ")
    expect(ada.locator("#typing")).to_have_text("Bob is typing…")
    expect(bob.locator("#typing")).to_have_text("")

    bob.get_by_role("textbox", name="Message").press_sequentially("how is the engine?")
    bob.get_by_role("button", name="Send").click()
    expect(bob.get_by_role("textbox", name="Message")).to_have_value("")
    for page in (ada, bob):
        messages = page.get_by_role("log", name="Messages").get_by_role("listitem")
        expect(messages).to_have_count(1)
        expect(messages.first).to_contain_text("Bob")
        expect(messages.first).to_contain_text("Hello Ada, how is the engine?")
    # The message ends Bob's typing indicator on Ada's page.
    expect(ada.locator("#typing")).to_have_text("")

    ada.get_by_role("textbox", name="Message").fill("Analytical, as ever.")
    ada.get_by_role("button", name="Send").click()
    expect(bob.get_by_role("log", name="Messages").get_by_role("listitem")).to_have_count(2)
    bob.get_by_role("textbox", name="Message").press_sequentially("Splendid")
    expect(ada.locator("#typing")).to_have_text("Bob is typing…")
    # CLARION_UPDATE_SCREENSHOTS=1 writes it to examples/chat/ (a test run leaves the tree).
    update = os.environ.get("CLARION_UPDATE_SCREENSHOTS") == "1"
    shots = ROOT / "examples" / "chat" if update else tmp_path
    ada.screenshot(path=str(shots / "screenshot.png"))

    # A second tab of Bob's (same cookie) is the same member: still two online for Ada.
    bob_tab = bob.context.new_page()
    bob_tab.goto(chat.base + "/")
    expect(bob_tab.locator("#connection")).to_have_text("connected")
    expect(online(bob_tab)).to_have_text(["Ada", "Bob (you)"])
    expect(online(ada)).to_have_text(["Ada (you)", "Bob"])

    # Bob signs out: his other tab is told on his private channel and leaves too, he
    # leaves Ada's list, and the member_removed webhook follows (Clarion holds it back
    # webhook_delay = 3 s, so that a page reload does not flap).
    bob.get_by_role("button", name="Sign out").click()
    expect(bob.get_by_role("heading", name="Join the chat")).to_be_visible()
    expect(bob_tab.get_by_role("heading", name="Join the chat")).to_be_visible()
    expect(online(ada)).to_have_text(["Ada (you)"])
    expect(ada.locator("#typing")).to_have_text("")
    until(
        lambda: any(e["name"] == "member_removed" for e in chat.app.state.webhook_log),
        timeout=10,
        what="the member_removed webhook",
    )
    bob.reload()
    expect(bob.get_by_role("heading", name="Join the chat")).to_be_visible()


def test_a_reload_keeps_the_session_and_a_blank_name_is_refused(open_page: Any) -> None:
    from playwright.sync_api import expect

    page = open_page()
    page.get_by_label("Your name").fill("   ")
    # The browser's own check (required) lets spaces through; the backend refuses them.
    page.get_by_role("button", name="Join").click()
    expect(page.get_by_role("alert").first).to_have_text("name is empty")
    sign_in(page, "Grace")
    page.reload()
    expect(page.get_by_text("Signed in as")).to_contain_text("Grace")
    expect(online(page)).to_have_text(["Grace (you)"])
