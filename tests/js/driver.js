#!/usr/bin/env node
// A long-lived driver for Clarion's integration tests.
//
// pytest spawns `node tests/js/driver.js`, writes one JSON command per line on stdin
// and reads one JSON report per line on stdout. Every command carries an `id` and is
// answered by exactly one `{"type":"reply","id":…,"ok":true,"result":…}` (or
// `"ok":false,"error":…`); everything pusher-js observes is reported asynchronously as
// `{"type":…,"client":…,…}` lines. Nothing else is written to stdout: pusher-js's own
// logging and console output go to stderr.
//
// Clients are real pusher-js 8.6.0 instances (the Node build, WebSocket transport only).
// Private and presence channels are authorised by a `channelAuthorization.customHandler`
// that signs with the official Node `pusher` SDK (`authorizeChannel`) and the secret
// given in the command, so no HTTP auth endpoint is needed. User sign-in
// (`pusher.signin()`) goes through a `userAuthentication.customHandler` that signs with
// the Node SDK's `authenticateUser` in the same way. The Node `pusher` SDK is also
// exposed for HTTP API calls (`sdk` command).
//
// Laravel Echo 2.5.0 (`echo_connect`, `echo`, `echo_leave`, `echo_socket_id`) drives
// its own pusher-js instance: Echo constructs it from the options it is given (the way
// an application passes `Pusher` to Echo), channel authorisation included, so what Echo
// forwards to pusher-js is exercised too.
"use strict";

const readline = require("readline");
const Pusher = require("pusher-js");
const PusherServer = require("pusher");

// stdout is reserved for reports.
const out = process.stdout;
console.log = (...args) => process.stderr.write(args.map(String).join(" ") + "\n");
console.info = console.log;
console.warn = console.log;
console.debug = console.log;
Pusher.logToConsole = false;
Pusher.log = (message) => process.stderr.write("[pusher-js] " + message + "\n");

function emit(report) {
  out.write(JSON.stringify(report) + "\n");
}

// Serialise anything pusher-js hands us (errors included) into plain JSON.
function plain(value) {
  if (value === undefined) return null;
  if (value instanceof Error) {
    return { name: value.name, message: value.message };
  }
  try {
    return JSON.parse(
      JSON.stringify(value, (key, v) => {
        if (v instanceof Error) return { name: v.name, message: v.message };
        if (typeof v === "function") return undefined;
        return v;
      })
    );
  } catch (e) {
    return String(value);
  }
}

function membersOf(channel) {
  const m = channel.members;
  if (!m) return null;
  const all = {};
  m.each((member) => {
    all[member.id] = plain(member.info);
  });
  return { count: m.count, me: plain(m.me), members: all, my_id: plain(m.myID) };
}

const clients = new Map(); // name -> {pusher, auth: Map(channel -> {...}), key, secret, appId}

// laravel-echo is an ES module: loaded on first use, so the pusher-js tests do not need it.
let echoModule = null;
async function loadEcho() {
  if (!echoModule) echoModule = await import("laravel-echo");
  return echoModule.default;
}

function newClient(cmd) {
  return {
    key: cmd.key,
    secret: cmd.secret || "unused-secret",
    appId: cmd.app_id || "0",
    masterKey: cmd.master_key || null,
    auth: new Map(),
    watched: new Set(),
    signin: null,
    pusher: null,
    echo: null,
    echoChannels: new Set(),
  };
}

// Construct a pusher-js instance (directly, or through Echo) without connecting: as
// pusher-js does before its runtime is ready. So the state changes from "initialized"
// on are all observed once the caller connects. (The export is PusherWithEncryption;
// the flag lives on its base class, Pusher.)
function unconnected(make) {
  const base = Object.getPrototypeOf(Pusher);
  const wasReady = base.isReady;
  base.isReady = false;
  try {
    return make();
  } finally {
    base.isReady = wasReady;
  }
}

// Report what the connection of client `name` goes through.
function watchConnection(name, pusher, raw) {
  const connection = pusher.connection;
  connection.bind("state_change", (states) => {
    emit({ type: "state", client: name, previous: states.previous, current: states.current });
  });
  connection.bind("connected", () => {
    emit({ type: "connected", client: name, socket_id: connection.socket_id });
    if (raw) {
      // The text frames exactly as they arrived, before pusher-js decodes them.
      // "connected" is emitted from inside the socket's onmessage handler for
      // connection_established; faye-websocket calls onmessage first and then the
      // addEventListener listeners, so this listener sees that first frame too.
      const socket = rawSocketOf(pusher);
      if (socket) {
        socket.addEventListener("message", (e) => {
          emit({ type: "raw", client: name, text: String(e.data) });
        });
      }
    }
  });
  connection.bind("error", (error) => {
    emit({ type: "error", client: name, error: plain(error) });
  });
  pusher.bind("pusher:error", (data) => {
    emit({ type: "pusher_error", client: name, data: plain(data) });
  });
  connection.bind("connecting_in", (delay) => {
    emit({ type: "connecting_in", client: name, delay });
  });
}

// The pusher channel name behind an Echo channel: Echo.channel / .private / .join.
const ECHO_PREFIX = { channel: "", private: "private-", join: "presence-" };

function sdkFor(app) {
  const options = {
    appId: String(app.appId),
    key: app.key,
    secret: app.secret,
    host: app.host,
    port: app.port,
    useTLS: false,
    timeout: 5000,
  };
  if (app.masterKey) options.encryptionMasterKeyBase64 = app.masterKey;
  return new PusherServer(options);
}

// The channel authoriser of one client: signs with the Node SDK, or hands back a
// ready-made auth response given by the test (e.g. one the Python SDK produced).
function authorizer(name) {
  return (params, callback) => {
    const client = clients.get(name);
    const spec = (client && client.auth.get(params.channelName)) || {};
    try {
      if (spec.response) {
        callback(null, spec.response);
        return;
      }
      const options = {
        appId: String(client.appId),
        key: client.key,
        secret: spec.secret || client.secret,
      };
      // For private-encrypted- channels the SDK adds shared_secret to the response.
      if (client.masterKey) options.encryptionMasterKeyBase64 = client.masterKey;
      const signer = new PusherServer(options);
      const result =
        spec.presence !== undefined && spec.presence !== null
          ? signer.authorizeChannel(params.socketId, params.channelName, spec.presence)
          : signer.authorizeChannel(params.socketId, params.channelName);
      callback(null, result);
    } catch (e) {
      callback(e, null);
    }
  };
}

function watchChannel(name, channel) {
  const channelName = channel.name;
  channel.bind_global((event, data) => {
    emit({ type: "event", client: name, channel: channelName, event, data: plain(data) });
  });
  channel.bind("pusher:subscription_succeeded", (data) => {
    emit({
      type: "subscription_succeeded",
      client: name,
      channel: channelName,
      members: membersOf(channel),
      data: channel.members ? null : plain(data),
    });
  });
  channel.bind("pusher:subscription_error", (data) => {
    emit({ type: "subscription_error", client: name, channel: channelName, data: plain(data) });
  });
  channel.bind("pusher:cache_miss", (data) => {
    emit({ type: "cache_miss", client: name, channel: channelName, data: plain(data) });
  });
  channel.bind("pusher:member_added", (member) => {
    emit({
      type: "member_added",
      client: name,
      channel: channelName,
      member: plain(member),
      count: channel.members.count,
    });
  });
  channel.bind("pusher:member_removed", (member) => {
    emit({
      type: "member_removed",
      client: name,
      channel: channelName,
      member: plain(member),
      count: channel.members.count,
    });
  });
}

// The user authenticator of one client: signs the `user_data` given by the last `signin`
// command with the Node SDK (authenticateUser), or hands back a ready-made response.
function userAuthenticator(name) {
  return (params, callback) => {
    const client = clients.get(name);
    const spec = (client && client.signin) || {};
    try {
      if (spec.response) {
        callback(null, spec.response);
        return;
      }
      const signer = new PusherServer({
        appId: String(client.appId),
        key: client.key,
        secret: spec.secret || client.secret,
      });
      callback(null, signer.authenticateUser(params.socketId, spec.user_data));
    } catch (e) {
      callback(e, null);
    }
  };
}

// Every WebSocket pusher-js opens, with the close code it ends with. pusher-js builds its
// sockets through Runtime.createWebSocket; the reports carry no client name (one driver
// process may hold many clients), so tests that read them give the client a driver of
// its own.
//
// With DRIVER_ORIGIN set, every socket of this driver sends that Origin header, as a
// browser on that page would (Node's WebSocket sends none of its own).
const runtime = Pusher.Runtime;
const createWebSocket = runtime.createWebSocket;
const ORIGIN = process.env.DRIVER_ORIGIN || null;
runtime.createWebSocket = function (url) {
  const socket = ORIGIN
    ? new (this.getWebSocketAPI())(url, [], { headers: { Origin: ORIGIN } })
    : createWebSocket.call(this, url);
  socket.addEventListener("close", (e) => {
    emit({ type: "ws_close", code: e.code, reason: e.reason || "" });
  });
  return socket;
};

function rawSocketOf(pusher) {
  const conn = pusher.connection.connection;
  const transport = conn && conn.transport;
  return transport && transport.socket;
}

const commands = {
  connect(cmd) {
    const name = cmd.client;
    if (clients.has(name)) throw new Error(`client ${name} exists`);
    const client = newClient(cmd);
    clients.set(name, client);
    const pusher = unconnected(
      () =>
        new Pusher(cmd.key, {
          cluster: "clarion-test",
          wsHost: cmd.host,
          wsPort: cmd.port,
          wssPort: cmd.port,
          // With tls, pusher-js speaks wss:// (certificates trusted through
          // NODE_EXTRA_CA_CERTS, set by the test for this driver).
          forceTLS: Boolean(cmd.tls),
          enabledTransports: ["ws"],
          enableStats: false,
          channelAuthorization: { customHandler: authorizer(name) },
          userAuthentication: { customHandler: userAuthenticator(name) },
        })
    );
    client.pusher = pusher;
    const connection = pusher.connection;
    watchConnection(name, pusher, cmd.raw);
    // Watchlist events as the application sees them (pusher.user.watchlist).
    for (const status of ["online", "offline"]) {
      pusher.user.watchlist.bind(status, (entry) => {
        emit({ type: "watchlist", client: name, name: status, entry: plain(entry) });
      });
    }
    pusher.user.bind("pusher:signin_error", (data) => {
      emit({ type: "signin_error", client: name, data: plain(data) });
    });
    pusher.connect();
    return { state: connection.state };
  },

  disconnect(cmd) {
    const client = need(cmd.client);
    client.pusher.disconnect();
    return { state: client.pusher.connection.state };
  },

  subscribe(cmd) {
    const client = need(cmd.client);
    client.auth.set(cmd.channel, {
      secret: cmd.secret,
      presence: cmd.presence,
      response: cmd.auth_response,
    });
    const channel = client.pusher.subscribe(cmd.channel);
    if (!client.watched.has(channel.name)) {
      client.watched.add(channel.name);
      watchChannel(cmd.client, channel);
    }
    return { channel: channel.name };
  },

  // pusher.signin() with the user_data (an object, signed by the Node SDK with `secret`
  // or the client's secret) or a ready-made auth response. Reports `signin_done` when
  // pusher-js settles the sign-in (user_data null if it failed), then `user_subscribed`
  // when its #server-to-user- channel is subscribed.
  signin(cmd) {
    const client = need(cmd.client);
    const name = cmd.client;
    client.signin = { user_data: cmd.user_data, secret: cmd.secret, response: cmd.auth_response };
    const user = client.pusher.user;
    client.pusher.signin();
    const done = user.signinDonePromise;
    if (!done) throw new Error("pusher-js made no sign-in promise");
    done.then(() => {
      const channel = user.serverToUserChannel;
      emit({
        type: "signin_done",
        client: name,
        user_data: plain(user.user_data),
        channel: channel ? channel.name : null,
      });
      if (channel) {
        channel.bind("pusher:subscription_succeeded", () => {
          emit({ type: "user_subscribed", client: name, channel: channel.name });
        });
        channel.bind("pusher:subscription_error", (data) => {
          emit({ type: "user_subscription_error", client: name, data: plain(data) });
        });
      }
    });
    return { state: client.pusher.connection.state };
  },

  // pusher.user.bind(event): events sent to this user (#server-to-user-{id}).
  user_bind(cmd) {
    const client = need(cmd.client);
    client.pusher.user.bind(cmd.event, (data) => {
      emit({ type: "user_event", client: cmd.client, event: cmd.event, data: plain(data) });
    });
    return {};
  },

  // pusher.bind_global: every event pusher-js hands the application globally, also those
  // for channels it does not know.
  bind_global(cmd) {
    const client = need(cmd.client);
    client.pusher.bind_global((event, data) => {
      emit({ type: "global", client: cmd.client, event, data: plain(data) });
    });
    return {};
  },

  // channel.trigger for each of `events` ({event, data}), all in one go; each result is
  // {sent} or, when pusher-js throws, {thrown: {name, message}}.
  trigger(cmd) {
    const client = need(cmd.client);
    const channel = client.pusher.channel(cmd.channel);
    if (!channel) throw new Error(`client ${cmd.client} has no channel ${cmd.channel}`);
    return cmd.events.map((e) => {
      try {
        return { sent: channel.trigger(e.event, e.data) };
      } catch (err) {
        return { thrown: plain(err) };
      }
    });
  },

  // pusher.send_event: any frame, bypassing pusher-js's channel objects.
  send_event(cmd) {
    const client = need(cmd.client);
    return { sent: client.pusher.send_event(cmd.event, cmd.data, cmd.channel || undefined) };
  },

  // What pusher-js holds about the signed-in user and a channel's subscription count.
  details(cmd) {
    const client = need(cmd.client);
    const user = client.pusher.user;
    const own = user.serverToUserChannel;
    const result = {
      user_data: plain(user.user_data),
      server_to_user: own ? { name: own.name, subscribed: own.subscribed } : null,
    };
    if (cmd.channel) {
      const channel = client.pusher.channel(cmd.channel);
      result.channel = channel
        ? { subscribed: channel.subscribed, subscription_count: plain(channel.subscriptionCount) }
        : null;
    }
    return result;
  },

  unsubscribe(cmd) {
    const client = need(cmd.client);
    client.pusher.unsubscribe(cmd.channel);
    return { channel: cmd.channel };
  },

  bind(cmd) {
    const client = need(cmd.client);
    const channel = client.pusher.channel(cmd.channel);
    if (!channel) throw new Error(`client ${cmd.client} has no channel ${cmd.channel}`);
    channel.bind(cmd.event, (data, metadata) => {
      emit({
        type: "bound",
        client: cmd.client,
        channel: cmd.channel,
        event: cmd.event,
        data: plain(data),
        metadata: metadata === undefined ? null : plain(metadata),
        args: metadata === undefined ? 1 : 2,
      });
    });
    return {};
  },

  // What pusher-js itself holds right now (state, pending reconnects, members).
  inspect(cmd) {
    const client = need(cmd.client);
    const manager = client.pusher.connection;
    const result = {
      state: manager.state,
      socket_id: manager.socket_id || null,
      retry_pending: Boolean(manager.retryTimer && manager.retryTimer.isRunning()),
      connecting: Boolean(manager.runner),
      has_connection: Boolean(manager.connection),
    };
    if (cmd.channel) {
      const channel = client.pusher.channel(cmd.channel);
      result.channel = channel
        ? {
            subscribed: channel.subscribed,
            pending: channel.subscriptionPending,
            members: membersOf(channel),
          }
        : null;
    }
    return result;
  },

  // The official Node server SDK: trigger, triggerBatch, get, terminateUserConnections.
  async sdk(cmd) {
    const pusher = sdkFor(cmd.app);
    let response;
    try {
      response = await pusher[cmd.method](...cmd.args);
    } catch (e) {
      return { status: e.status || null, body: e.body || null, error: e.message };
    }
    const text = await response.text();
    let body;
    try {
      body = JSON.parse(text);
    } catch (e) {
      body = { unparsed: text };
    }
    return { status: response.status, body };
  },

  // new Echo({broadcaster: "pusher", Pusher, ...}): Echo builds the pusher-js instance
  // from these options (as `new Pusher(key, options)`), channelAuthorization included.
  async echo_connect(cmd) {
    const name = cmd.client;
    if (clients.has(name)) throw new Error(`client ${name} exists`);
    const Echo = await loadEcho();
    const client = newClient(cmd);
    const echo = unconnected(
      () =>
        new Echo({
          broadcaster: "pusher",
          Pusher,
          key: cmd.key,
          cluster: "mt1",
          wsHost: cmd.host,
          wsPort: cmd.port,
          forceTLS: false,
          enabledTransports: ["ws"],
          enableStats: false,
          channelAuthorization: { customHandler: authorizer(name) },
        })
    );
    client.echo = echo;
    client.pusher = echo.connector.pusher;
    clients.set(name, client);
    watchConnection(name, client.pusher, false);
    client.pusher.connect();
    return { state: client.pusher.connection.state };
  },

  // Echo[kind](channel) (kind: channel, private, join), then each of `calls` on it, in
  // one go: {method, event, data}. Callbacks report {type: "echo", client, channel (the
  // pusher channel name), method, event, ...}. The first time a channel is seen its
  // subscribed() and error() callbacks are registered too, before any frame can arrive.
  echo(cmd) {
    const client = need(cmd.client);
    if (!client.echo) throw new Error(`client ${cmd.client} is not an Echo client`);
    const prefix = ECHO_PREFIX[cmd.kind];
    if (prefix === undefined) throw new Error(`unknown Echo channel kind ${cmd.kind}`);
    const channelName = prefix + cmd.channel;
    if (cmd.presence !== undefined && cmd.presence !== null) {
      client.auth.set(channelName, { presence: cmd.presence });
    }
    const channel = client.echo[cmd.kind](cmd.channel);
    const reporter = (method, event) => (fields) =>
      emit({
        type: "echo",
        client: cmd.client,
        channel: channelName,
        method,
        event: event === undefined ? null : event,
        ...fields,
      });
    if (!client.echoChannels.has(channelName)) {
      client.echoChannels.add(channelName);
      const subscribed = reporter("subscribed");
      const failed = reporter("error");
      channel.subscribed(() => subscribed({}));
      channel.error((status) => failed({ data: plain(status) }));
    }
    for (const call of cmd.calls) {
      const report = reporter(call.method, call.event);
      switch (call.method) {
        case "listen":
        case "listenForWhisper":
          channel[call.method](call.event, (data) => report({ data: plain(data) }));
          break;
        case "here":
          channel.here((members) => report({ members: plain(members) }));
          break;
        case "joining":
        case "leaving":
          channel[call.method]((member) => report({ member: plain(member) }));
          break;
        case "whisper":
          channel.whisper(call.event, call.data);
          break;
        default:
          throw new Error(`unknown Echo channel method ${call.method}`);
      }
    }
    return { channel: channelName };
  },

  // Echo.socketId(): what Echo's HTTP interceptors send as X-Socket-Id (toOthers()).
  echo_socket_id(cmd) {
    return need(cmd.client).echo.socketId() || null;
  },

  // Echo.leave(channel): leaves the channel and its private- and presence- variants.
  echo_leave(cmd) {
    const client = need(cmd.client);
    client.echo.leave(cmd.channel);
    return {};
  },

  close_all() {
    for (const client of clients.values()) client.pusher.disconnect();
    return { closed: clients.size };
  },
};

function need(name) {
  const client = clients.get(name);
  if (!client) throw new Error(`no client ${name}`);
  return client;
}

async function handle(line) {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    emit({ type: "reply", id: null, ok: false, error: `bad JSON: ${e.message}` });
    return;
  }
  const fn = commands[cmd.cmd];
  if (!fn) {
    emit({ type: "reply", id: cmd.id, ok: false, error: `unknown command ${cmd.cmd}` });
    return;
  }
  try {
    const result = await fn(cmd);
    emit({ type: "reply", id: cmd.id, ok: true, result: result === undefined ? null : result });
  } catch (e) {
    emit({ type: "reply", id: cmd.id, ok: false, error: String((e && e.message) || e) });
  }
}

const input = readline.createInterface({ input: process.stdin });
input.on("line", (line) => {
  if (line.trim()) handle(line);
});
input.on("close", () => {
  for (const client of clients.values()) {
    try {
      client.pusher.disconnect();
    } catch (e) {
      // exiting anyway
    }
  }
  process.exit(0);
});
process.on("uncaughtException", (e) => {
  emit({ type: "crash", error: String((e && e.stack) || e) });
});
process.on("unhandledRejection", (e) => {
  emit({ type: "crash", error: String((e && e.stack) || e) });
});
emit({ type: "ready" });
