// The Clarion admin console: plain script, no build step. Everything the server sends is
// put in the page with textContent (never as HTML): channel names and payloads are
// chosen by clients.
"use strict";

const TYPES = ["Connection", "Disconnection", "Subscribed", "Unsubscribed", "Occupied",
  "Vacated", "Member added", "Member removed", "API Message", "Client Event", "Sign-in",
  "Error", "Webhook"];
const MAX_ROWS = 2000;
const main = document.getElementById("main");

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function getJSON(url) {
  const reply = await fetch(url, { credentials: "same-origin" });
  if (reply.status === 401) { location.reload(); throw new Error("signed out"); }
  return reply.json();
}

function slug(type) { return type.toLowerCase().replace(/[^a-z]+/g, "-"); }

// --- header: app switcher and live counts -------------------------------------------
const switcher = document.getElementById("app-switcher");
const counts = document.getElementById("live-counts");
const appMatch = location.pathname.match(/^\/admin\/apps\/([^/]+)\/?$/);
const currentApp = appMatch ? decodeURIComponent(appMatch[1]) : null;
let samples = [];

async function refreshOverview(first) {
  const data = await getJSON("/admin/api/overview");
  if (first) {
    switcher.append(el("option", { value: "" }, "Overview"));
    for (const app of data.apps) {
      const option = el("option", { value: app.id }, app.name ? `${app.id} · ${app.name}` : app.id);
      if (app.id === currentApp) option.selected = true;
      switcher.append(option);
    }
  }
  let conns = 0, rate = 0;
  for (const app of data.apps) {
    if (currentApp === null || app.id === currentApp) { conns += app.connections; rate += app.messages_per_second; }
  }
  const channels = data.apps.filter(a => currentApp === null || a.id === currentApp).reduce((n, a) => n + a.channels, 0);
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  counts.textContent = `${plural(conns, "connection")} · ${plural(channels, "channel")} · ${rate.toFixed(1)} msg/s`;
  samples = data.history;
  document.body.classList.toggle("cluster", data.cluster);
  if (currentApp === null) renderOverview(data);
}

switcher.addEventListener("change", () => {
  location.href = switcher.value ? `/admin/apps/${encodeURIComponent(switcher.value)}` : "/admin/";
});

// --- overview -----------------------------------------------------------------------
function renderOverview(data) {
  const body = document.querySelector("#apps-table tbody");
  body.replaceChildren(...data.apps.map(app => el("tr", {},
    el("td", {}, el("a", { href: `/admin/apps/${encodeURIComponent(app.id)}` }, app.id)),
    el("td", {}, app.name || "—"),
    el("td", {}, app.enabled ? "yes" : "no"),
    el("td", { class: "num" }, app.connections),
    el("td", { class: "num" }, app.channels),
    el("td", { class: "num" }, app.messages_per_second.toFixed(1)))));
  document.querySelector("#nodes-table tbody").replaceChildren(...data.nodes.map(n =>
    el("tr", {},
      el("td", {}, n.name, n.this ? el("span", { class: "this-node" }, " (this node)") : ""),
      el("td", { class: "num" }, n.connections),
      el("td", {}, n.up_since ? new Date(n.up_since * 1000).toLocaleString([], { hour12: false }) : "—"),
      el("td", {}, n.heartbeat_age === null ? "—" : `${n.heartbeat_age.toFixed(1)} s ago`))));
  document.getElementById("nodes-note").textContent = data.cluster
    ? `${data.nodes.length} node${data.nodes.length === 1 ? "" : "s"} in the cluster`
    : "This node only (no cluster)";
  drawChart();
}

function span(seconds) {
  return seconds < 120 ? `last ${seconds} s` : `last ${Math.round(seconds / 60)} min`;
}

function drawChart() {
  const canvas = document.getElementById("chart");
  if (!canvas) return;
  const maxConns = Math.max(1, ...samples.map(p => p.conns));
  const maxRate = Math.max(1, ...samples.map(p => p.rate));
  document.getElementById("chart-scale").textContent =
    `scale: ${maxConns} connections, ${maxRate.toFixed(1)} msg/s · ${span(samples.length * 2)}`;
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = "#e3e6ea"; ctx.lineWidth = 1;
  for (let i = 1; i < 4; i++) { ctx.beginPath(); ctx.moveTo(0, h * i / 4); ctx.lineTo(w, h * i / 4); ctx.stroke(); }
  const line = (key, colour) => {
    const max = Math.max(1, ...samples.map(p => p[key]));
    ctx.strokeStyle = colour; ctx.lineWidth = 2; ctx.beginPath();
    samples.forEach((p, i) => {
      const x = w - (samples.length - 1 - i) * (w / 149);
      const y = h - 4 - (p[key] / max) * (h - 12);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  };
  line("conns", "#2563eb"); line("rate", "#d97706");
}

// --- one app --------------------------------------------------------------------------
function openApp(appId) {
  main.append(document.getElementById("app-tpl").content.cloneNode(true));
  document.querySelector(".app-title").textContent = `App ${appId}`;
  document.title = `App ${appId} · Clarion admin`;
  const log = document.getElementById("log");
  const filter = document.getElementById("filter");
  const pause = document.getElementById("pause");
  const dropped = document.getElementById("dropped");
  const shown = new Set(TYPES);
  let paused = false, held = [], droppedCount = 0;

  const boxes = document.getElementById("type-boxes");
  for (const type of TYPES) {
    const box = el("input", { type: "checkbox", id: `type-${slug(type)}` });
    box.checked = true;
    box.addEventListener("change", () => { box.checked ? shown.add(type) : shown.delete(type); applyFilter(); });
    boxes.append(el("label", { class: `check badge-${slug(type)}` }, box, " ", type));
  }

  function visible(row) {
    if (!shown.has(row.dataset.type)) return false;
    const needle = filter.value.trim().toLowerCase();
    return !needle || row.dataset.search.includes(needle);
  }
  function applyFilter() { for (const row of log.children) row.hidden = !visible(row); }
  filter.addEventListener("input", applyFilter);

  function render(item) {
    const when = new Date(item.time * 1000);
    const time = when.toLocaleTimeString([], { hour12: false }) + "." + String(when.getMilliseconds()).padStart(3, "0");
    const row = el("div", { class: "row", "data-type": item.type },
      el("span", { class: "time" }, time),
      el("span", { class: `badge badge-${slug(item.type)}` }, item.type),
      el("span", { class: "socket", title: item.socket_id || "" }, item.socket_id || ""),
      el("span", { class: "channel", title: item.channel || "" }, item.channel || ""),
      el("span", { class: "event", title: item.event || "" }, item.event || ""),
      // Shown in a cluster only (body.cluster): whose row it is.
      el("span", { class: "node", title: item.node || "" }, item.node || ""));
    if (item.details) {
      const details = el("details", { class: "details" }, el("summary", {}, "details"), el("pre", {}, item.details));
      if (item.node) details.append(el("p", { class: "node" }, `node ${item.node}`));
      row.append(details);
    } else {
      row.append(el("span", { class: "details" }));
    }
    row.dataset.search = [item.channel, item.event, item.socket_id].filter(Boolean).join(" ").toLowerCase();
    row.hidden = !visible(row);
    return row;
  }
  function add(rows) {
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
    log.append(...rows.map(render));
    while (log.children.length > MAX_ROWS) log.firstElementChild.remove();
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", String(paused));
    if (!paused && held.length) { add(held); held = []; }
  });
  document.getElementById("clear").addEventListener("click", () => {
    log.replaceChildren(); held = []; droppedCount = 0; dropped.hidden = true;
  });

  const stream = new EventSource(`/admin/api/apps/${encodeURIComponent(appId)}/stream`);
  // Tests (and the curious) can tell when rows start flowing.
  stream.onopen = () => { log.dataset.stream = "open"; };
  stream.onerror = () => { log.dataset.stream = "reconnecting"; };
  stream.onmessage = (message) => {
    const item = JSON.parse(message.data);
    if (paused) { if (held.length < MAX_ROWS) held.push(item); else droppedCount++; } else add([item]);
  };
  stream.addEventListener("dropped", (message) => {
    droppedCount += Number(message.data);
    dropped.textContent = `${droppedCount} rows dropped (the console could not keep up)`;
    dropped.hidden = false;
  });

  // Send an event: the server publishes it through the HTTP API's path.
  const form = document.getElementById("send-form");
  const reply = document.getElementById("send-reply");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = {
      channel: form.channel.value.trim(), event: form.event.value.trim(),
      data: form.data.value, socket_id: form.socket_id.value.trim() || null,
    };
    reply.textContent = "Sending…"; reply.className = "";
    try {
      const answer = await fetch(`/admin/api/apps/${encodeURIComponent(appId)}/events`, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      const text = await answer.text();
      reply.textContent = answer.ok ? `Sent (${answer.status}) ${text}` : `${answer.status}: ${text}`;
      reply.className = answer.ok ? "ok" : "fail";
    } catch (err) {
      reply.textContent = `Failed: ${err}`; reply.className = "fail";
    }
  });

  // Channels, with a presence channel's members on demand.
  const prefix = document.getElementById("channel-prefix");
  const list = document.getElementById("channels");
  const opened = new Set();
  async function refreshChannels() {
    const data = await getJSON(`/admin/api/apps/${encodeURIComponent(appId)}/channels?prefix=${encodeURIComponent(prefix.value)}`);
    const items = [];
    for (const ch of data.channels) {
      const label = `${ch.subscriptions} subscription${ch.subscriptions === 1 ? "" : "s"}` + (ch.users !== undefined ? ` · ${ch.users} user${ch.users === 1 ? "" : "s"}` : "");
      const item = el("li", { class: "channel-item" }, el("span", { class: "name" }, ch.name), el("span", { class: "meta" }, label));
      if (ch.users !== undefined) {
        const details = el("details", { "data-channel": ch.name }, el("summary", {}, "Members"));
        if (opened.has(ch.name)) details.open = true;
        details.addEventListener("toggle", () => { details.open ? opened.add(ch.name) : opened.delete(ch.name); if (details.open) loadMembers(details, ch.name); });
        if (details.open) loadMembers(details, ch.name);
        item.append(details);
      }
      items.push(item);
    }
    if (!items.length) items.push(el("li", { class: "empty" }, "No occupied channel"));
    list.replaceChildren(...items);
  }
  async function loadMembers(details, name) {
    const data = await getJSON(`/admin/api/apps/${encodeURIComponent(appId)}/channels/${encodeURIComponent(name)}`);
    const members = el("ul", { class: "members" }, ...(data.members || []).map(m =>
      el("li", {}, el("code", {}, m.user_id), " ", el("span", { class: "info" }, JSON.stringify(m.user_info)))));
    details.querySelector("ul")?.remove();
    details.append(members);
  }
  prefix.addEventListener("input", refreshChannels);

  async function refreshWebhooks() {
    const data = await getJSON(`/admin/api/apps/${encodeURIComponent(appId)}/webhooks`);
    const box = document.getElementById("webhooks");
    if (!data.targets.length) { box.replaceChildren(el("p", { class: "empty" }, "No webhook target")); return; }
    const table = el("table", { class: "grid small" }, el("thead", {}, el("tr", {},
      ...["Target", "Sent", "Failed", "Retrying", "Dropped", "Queued"].map(h => el("th", {}, h)))));
    const body = el("tbody");
    for (const t of data.targets) {
      body.append(el("tr", {}, el("td", { class: "url" }, t.url), ...["sent", "failed", "retrying", "dropped", "queued"].map(k => el("td", { class: "num" }, t[k] ?? 0))));
    }
    table.append(body);
    const recent = el("ul", { class: "recent" }, ...data.recent.map(d => el("li", {},
      el("span", { class: d.status === "sent" ? "ok" : "fail" }, d.status), ` attempt ${d.attempt} · ${d.events} event(s) · ${d.url}`)));
    const givenUp = el("ul", { class: "recent" }, ...data.given_up.map(g => {
      const button = el("button", { type: "button", class: "small" }, "Retry");
      button.addEventListener("click", async () => {
        button.disabled = true;
        const answer = await fetch(`/admin/api/apps/${encodeURIComponent(appId)}/webhooks/retry/${g.id}`,
          { method: "POST", credentials: "same-origin" });
        button.textContent = answer.ok ? "Queued" : `Failed (${answer.status})`;
      });
      return el("li", {}, el("span", { class: "fail" }, "given up"),
        ` after ${g.attempts} attempts · ${g.events} event(s) · ${g.error} · ${g.url} `, button);
    }));
    const parts = [table, recent];
    if (data.given_up.length) parts.push(el("h3", {}, "Given up"), givenUp);
    box.replaceChildren(...parts);
  }
  async function refreshErrors() {
    const data = await getJSON(`/admin/api/apps/${encodeURIComponent(appId)}/errors`);
    const box = document.getElementById("errors");
    if (!data.errors.length) { box.replaceChildren(el("li", { class: "empty" }, "No error")); return; }
    box.replaceChildren(...data.errors.map(e => el("li", {},
      el("span", { class: "count" }, `×${e.count}`), el("strong", {}, e.kind), " ", e.message)));
  }
  const tick = () => Promise.allSettled([refreshChannels(), refreshWebhooks(), refreshErrors()]);
  tick(); setInterval(tick, 2000);
}

if (currentApp === null) {
  main.append(document.getElementById("overview-tpl").content.cloneNode(true));
} else {
  openApp(currentApp);
}
refreshOverview(true).catch(() => {});
setInterval(() => refreshOverview(false).catch(() => {}), 2000);
