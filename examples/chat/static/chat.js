// The example chat's page: sign in, join the presence room with pusher-js, list who is
// online, show messages (POSTed to the backend, which triggers them through Clarion) and
// typing indicators (client events on the room). Text from others is only ever set as
// textContent, never parsed as HTML.
"use strict";

const TYPING_EVERY_MS = 1500; // at most one client-typing event per this long
const TYPING_SHOWN_MS = 3000; // an indicator ends this long after the last one

const $ = (id) => document.getElementById(id);
const chat = { pusher: null, room: null, me: null, typing: new Map(), lastTyping: 0 };

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(typeof data.detail === "string" ? data.detail : `HTTP ${response.status}`);
  }
  return data;
}

function showSignIn() {
  $("chat-panel").hidden = true;
  $("account").hidden = true;
  $("sign-in-panel").hidden = false;
  $("name").focus();
}

async function enter(user) {
  chat.me = user;
  $("me-name").textContent = user.name;
  $("sign-in-panel").hidden = true;
  $("account").hidden = false;
  $("chat-panel").hidden = false;
  $("messages").replaceChildren();
  $("online").replaceChildren();

  const config = await api("GET", "/api/config");
  chat.pusher = new Pusher(config.key, config.options);
  chat.pusher.connection.bind("state_change", ({ current }) => {
    $("connection").textContent = current;
  });

  const room = chat.pusher.subscribe(config.room);
  chat.room = room;
  room.bind("pusher:subscription_succeeded", () => renderOnline());
  room.bind("pusher:subscription_error", (status) => {
    $("send-error").textContent = `Could not join the room (${status.status || "error"}).`;
  });
  room.bind("pusher:member_added", () => renderOnline());
  room.bind("pusher:member_removed", (member) => {
    stopTyping(member.id);
    renderOnline();
  });
  room.bind("message", (message) => {
    stopTyping(message.user.id);
    addMessage(message);
  });
  room.bind("client-typing", (_data, metadata) => {
    if (metadata && metadata.user_id) startTyping(metadata.user_id);
  });

  // Signing out in another tab ends this one's session too.
  const mine = chat.pusher.subscribe(config.privatePrefix + user.id);
  mine.bind("signed-out", () => leave(false));

  $("message").focus();
}

function leave(tellServer) {
  if (chat.pusher) chat.pusher.disconnect();
  chat.pusher = null;
  chat.room = null;
  chat.me = null;
  for (const timer of chat.typing.values()) clearTimeout(timer);
  chat.typing.clear();
  renderTyping();
  $("connection").textContent = "not connected";
  showSignIn();
  if (tellServer) return api("DELETE", "/api/session");
  return Promise.resolve();
}

function nameOf(userId) {
  const member = chat.room && chat.room.members.get(userId);
  return member && member.info ? member.info.name : "Someone";
}

function renderOnline() {
  const people = [];
  chat.room.members.each((member) => people.push(member));
  people.sort((a, b) => a.info.name.localeCompare(b.info.name));
  const items = people.map((member) => {
    const item = document.createElement("li");
    item.textContent = member.info.name;
    if (member.id === chat.me.id) {
      const you = document.createElement("span");
      you.className = "you";
      you.textContent = "(you)";
      item.append(" ", you);
    }
    return item;
  });
  $("online").replaceChildren(...items);
  $("online-count").textContent = `(${people.length})`;
}

function addMessage(message) {
  const item = document.createElement("li");
  if (chat.me && message.user.id === chat.me.id) item.className = "mine";
  const sent = new Date(message.sent_at);
  const time = document.createElement("time");
  time.dateTime = sent.toISOString();
  time.textContent = sent.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const author = document.createElement("span");
  author.className = "author";
  author.textContent = message.user.name;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = message.text;
  item.append(time, author, text);
  const list = $("messages");
  list.append(item);
  list.scrollTop = list.scrollHeight;
}

function startTyping(userId) {
  if (chat.me && userId === chat.me.id) return; // another tab of mine
  clearTimeout(chat.typing.get(userId));
  chat.typing.set(userId, setTimeout(() => stopTyping(userId), TYPING_SHOWN_MS));
  renderTyping();
}

function stopTyping(userId) {
  if (!chat.typing.has(userId)) return;
  clearTimeout(chat.typing.get(userId));
  chat.typing.delete(userId);
  renderTyping();
}

function renderTyping() {
  const names = [...chat.typing.keys()].map(nameOf).sort();
  let text = "";
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = "Several people are typing…";
  $("typing").textContent = text;
}

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("sign-in-error").textContent = "";
  try {
    const { user } = await api("POST", "/api/session", { name: $("name").value });
    await enter(user);
  } catch (error) {
    $("sign-in-error").textContent = error.message;
  }
});

$("sign-out").addEventListener("click", () => {
  leave(true).catch(() => {});
});

$("message").addEventListener("input", () => {
  const now = Date.now();
  if (!chat.room || !chat.room.subscribed || now - chat.lastTyping < TYPING_EVERY_MS) return;
  chat.lastTyping = now;
  chat.room.trigger("client-typing", {});
});

$("send-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("send-error").textContent = "";
  const input = $("message");
  try {
    await api("POST", "/api/messages", { text: input.value });
    input.value = "";
    chat.lastTyping = 0;
  } catch (error) {
    $("send-error").textContent = `Not sent: ${error.message}`;
  }
  input.focus();
});

api("GET", "/api/me")
  .then(({ user }) => (user ? enter(user) : showSignIn()))
  .catch(() => showSignIn());
