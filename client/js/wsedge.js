// wsedge browser client: an ES module with no dependencies, for
// <script type="module"> and bundlers alike. It speaks wsedge.v1.json
// (docs/PROTOCOL.md) and keeps one WebSocket up: reconnects with
// exponential backoff and full jitter, honours the server's disconnect
// push (no reconnect after a refusal, no sooner than the delay a draining
// node names), resubscribes with the last position seen so missed
// publications arrive in order and once, and queues publishes issued
// while disconnected. Types: wsedge.d.ts.

export const SUBPROTOCOL = 'wsedge.v1.json';

export const State = Object.freeze({
  Disconnected: 'disconnected',
  Connecting: 'connecting',
  Connected: 'connected',
  Closed: 'closed',
});

/** An error reply from the server, or a client-side failure with a code. */
export class WsedgeError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'WsedgeError';
    this.code = code;
  }
}

// Client-side error codes (strings, so they never collide with the
// server's numeric ones).
export const ErrorCode = Object.freeze({
  Closed: 'closed',
  QueueFull: 'queue_full',
  Timeout: 'timeout',
  ConnectionLost: 'connection_lost',
  Offline: 'offline',
  BadChannel: 'bad_channel',
  AlreadySubscribed: 'already_subscribed',
});

const CHANNEL = /^[a-z0-9_-]{1,32}:[\x21-\x7e]+$/;

/**
 * Attempt n's wait in ms: uniform in [0, min(max, min·factor^n)] ("full
 * jitter"), u being a uniform random number in [0, 1).
 */
export function backoffDelay(attempt, { min, max, factor }, u) {
  const ceiling = Math.min(max, min * Math.pow(factor, attempt));
  return u * ceiling;
}

const DEFAULTS = {
  getToken: null,
  backoff: { min: 500, max: 20000, factor: 2 },
  healthyAfter: 5000,
  readTimeout: 50000,
  commandTimeout: 10000,
  offlineQueue: 256,
  random: Math.random,
  WebSocket: globalThis.WebSocket,
};

/**
 * A connection to wsedge that reconnects by itself. Events (on/off):
 * "state" {from, to, reason, code, delay}.
 */
export class Client {
  constructor(url, options = {}) {
    this.url = url;
    this.opts = { ...DEFAULTS, ...options, backoff: { ...DEFAULTS.backoff, ...(options.backoff || {}) } };
    if (!this.opts.WebSocket) throw new TypeError('wsedge: no WebSocket implementation (pass options.WebSocket)');
    this._state = State.Disconnected;
    this._listeners = new Map();
    this._subs = new Map();
    this._queue = [];
    this._ws = null;
    this._gen = 0;
    this._nextId = 0;
    this._calls = new Map();
    this._serverSubs = new Map();
    this._attempt = 0;
    this._retryTimer = null;
    this._watchTimer = null;
    this._disc = null;
    this._upAt = 0;
    this._heard = 0;
    this._pinged = 0;
  }

  get state() { return this._state; }

  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return this;
  }

  off(event, fn) {
    this._listeners.get(event)?.delete(fn);
    return this;
  }

  _emit(event, arg) {
    for (const fn of this._listeners.get(event) || []) {
      try { fn(arg); } catch (e) { setTimeout(() => { throw e; }); }
    }
  }

  _setState(to, reason, extra = {}) {
    const from = this._state;
    if (from === to && to !== State.Disconnected) return;
    this._state = to;
    this._emit('state', { from, to, reason, ...extra });
  }

  /** Starts connecting (once); the client then stays connected until close(). */
  connect() {
    if (this._state === State.Disconnected && !this._ws && !this._retryTimer) this._dial('dial');
    return this;
  }

  async _dial(reason) {
    this._retryTimer = null;
    if (this._state === State.Closed) return;
    this._setState(State.Connecting, reason);
    let token = null;
    if (this.opts.getToken) {
      try {
        token = await this.opts.getToken();
      } catch (e) {
        return this._retry('token: ' + (e && e.message), null);
      }
      if (this._state === State.Closed) return;
    }
    const protocols = token ? [SUBPROTOCOL, 'token.' + token] : [SUBPROTOCOL];
    let ws;
    try {
      ws = new this.opts.WebSocket(this.url, protocols);
    } catch (e) {
      return this._retry('dial failed: ' + e.message, null);
    }
    this._ws = ws;
    this._disc = null;
    let opened = false;
    ws.onopen = () => {
      if (this._ws !== ws) return;
      opened = true;
      this._connected(ws);
    };
    ws.onmessage = (e) => {
      if (this._ws !== ws) return;
      this._heard = Date.now();
      let msg;
      try { msg = JSON.parse(e.data); } catch { ws.close(4000, 'bad JSON'); return; }
      this._handle(ws, msg);
    };
    ws.onclose = (e) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._lost();
      if (this._state === State.Closed) return;
      const disc = this._disc;
      if (disc && !disc.reconnect) {
        this._terminate(disc.reason, disc.code);
        return;
      }
      if (opened && Date.now() - this._upAt >= this.opts.healthyAfter) this._attempt = 0;
      const why = disc ? disc.reason : opened ? 'connection lost' : 'dial failed';
      this._retry(why, disc ? disc.code : e.code, disc ? disc.delay : 0);
    };
  }

  _retry(reason, code, atLeast = 0) {
    let delay = backoffDelay(this._attempt, this.opts.backoff, this.opts.random());
    this._attempt++;
    if (atLeast > delay) delay = atLeast;
    this._setState(State.Disconnected, reason, { code, delay });
    this._retryTimer = setTimeout(() => this._dial('reconnect'), delay);
  }

  _connected(ws) {
    this._gen++;
    this._serverSubs = new Map(); // the token's subs claim: channel → position of its subscribed push
    this._upAt = this._heard = Date.now();
    this._pinged = 0;
    this._setState(State.Connected, 'connected');
    const step = Math.max(this.opts.readTimeout / 8, 5);
    this._watchTimer = setInterval(() => this._watch(ws), step);
    for (const s of this._subs.values()) this._sendSubscribe(ws, s);
    this._flush();
  }

  // Dead-connection detection: browsers cannot see WebSocket pings, so
  // the server's ping push (or any message) is what keeps us believing.
  _watch(ws) {
    if (this._ws !== ws) return;
    const silent = Date.now() - this._heard;
    if (silent >= this.opts.readTimeout) {
      this._disc = null;
      ws.close(4000, 'no traffic');
      // Browsers may wait long for a dead peer's close: do not.
      ws.onclose({ code: 4000 });
    } else if (silent >= this.opts.readTimeout / 2 && this._pinged !== this._heard) {
      this._pinged = this._heard;
      this._send(ws, { op: 'ping' }, () => {});
    }
  }

  _lost() {
    clearInterval(this._watchTimer);
    this._watchTimer = null;
    const calls = this._calls;
    this._calls = new Map();
    for (const k of calls.values()) k.done(null, new WsedgeError(ErrorCode.ConnectionLost, 'connection lost before the reply'));
    for (const s of this._subs.values()) { s._pending = false; s._buffer = []; }
  }

  _terminate(reason, code) {
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    clearInterval(this._watchTimer);
    this._setState(State.Closed, reason, { code });
    const err = new WsedgeError(ErrorCode.Closed, 'client closed: ' + reason);
    for (const k of this._queue) k.done(null, err);
    this._queue = [];
    for (const s of this._subs.values()) s._fail(err);
    this._subs.clear();
  }

  /** Closes for good: the connection (1000), queued publishes and waiting commands fail. */
  close() {
    if (this._state === State.Closed) return;
    const ws = this._ws;
    this._ws = null;
    this._terminate('closed by the application');
    if (ws) {
      try { ws.close(1000, 'bye'); } catch { /* already closing */ }
    }
    this._lost();
  }

  // _send registers a command and writes it; done(reply, err) is called once.
  _send(ws, cmd, done) {
    const id = ++this._nextId;
    const k = { id, done, ws };
    this._calls.set(id, k);
    try {
      ws.send(JSON.stringify({ id, ...cmd }));
    } catch (e) {
      this._calls.delete(id);
      done(null, new WsedgeError(ErrorCode.ConnectionLost, e.message));
    }
    return k;
  }

  _handle(ws, msg) {
    if (msg.id !== undefined) {
      const k = this._calls.get(msg.id);
      if (k) {
        this._calls.delete(msg.id);
        k.done(msg, null);
      }
    } else if (typeof msg.channel === 'string') {
      const s = this._subs.get(msg.channel);
      if (s && s._gen === this._gen) s._push(msg.offset, msg.data);
    } else if (msg.disconnect) {
      const d = msg.disconnect;
      this._disc = { code: d.code, reason: d.reason, reconnect: d.reconnect, delay: d.delay || 0 };
    } else if (msg.refresh) {
      this._refresh(ws);
    } else if (msg.lagged) {
      const s = this._subs.get(msg.lagged.channel);
      if (s && s._gen === this._gen && !s._pending) this._sendHistory(ws, s);
    } else if (msg.reset) {
      // The channel's stream restarted with a new epoch while we stayed
      // subscribed: what the old one had after our position may be lost
      // (the application refetches); the new one continues from here.
      const s = this._subs.get(msg.reset.channel);
      if (s && s._gen === this._gen) {
        if (s._pending) {
          ws.close(); // a reply for the old position is awaited: start over, the resubscribe says recovered false
          return;
        }
        s._pos = { offset: msg.reset.offset || 0, epoch: msg.reset.epoch || '' };
        s._hasPos = true;
        if (s._onUnrecovered) {
          try { s._onUnrecovered({ offset: s._pos.offset, epoch: s._pos.epoch }); } catch (e) { setTimeout(() => { throw e; }); }
        }
      }
    } else if (msg.subscribed) {
      const p = msg.subscribed;
      this._serverSubs.set(p.channel, { offset: p.offset || 0, epoch: p.epoch || '' });
    } else if (msg.unsubscribed) {
      const s = this._subs.get(msg.unsubscribed.channel);
      if (s) {
        this._subs.delete(s.channel);
        s._fail(new WsedgeError(403, 'unsubscribed by the server'));
      }
    }
  }

  async _refresh(ws) {
    if (!this.opts.getToken) return;
    let token;
    try { token = await this.opts.getToken(); } catch { return; } // the server disconnects (4004); we reconnect with a new one
    if (this._ws === ws) this._send(ws, { op: 'refresh', token }, () => {});
  }

  /**
   * Subscribes to channel; handler({channel, offset, epoch, data}) is
   * called in offset order, never twice for one offset, across
   * reconnects. Returns the Subscription at once; await its `ready` for
   * the server's confirmation (it rejects on a refusal).
   */
  subscribe(channel, handler, opts = {}) {
    if (!CHANNEL.test(channel) || channel.length > 255) throw new WsedgeError(ErrorCode.BadChannel, 'bad channel name: ' + channel);
    if (this._state === State.Closed) throw new WsedgeError(ErrorCode.Closed, 'client closed');
    if (this._subs.has(channel)) throw new WsedgeError(ErrorCode.AlreadySubscribed, 'already subscribed: ' + channel);
    const s = new Subscription(this, channel, handler, opts);
    this._subs.set(channel, s);
    if (this._ws && this._state === State.Connected) this._sendSubscribe(this._ws, s);
    return s;
  }

  _sendSubscribe(ws, s) {
    s._gen = this._gen;
    s._pending = true;
    s._buffer = [];
    const since = s._hasPos;
    const cmd = { op: 'subscribe', channel: s.channel };
    if (since) cmd.since = { offset: s._pos.offset, epoch: s._pos.epoch };
    const gen = this._gen;
    this._send(ws, cmd, (reply, err) => this._onPosition(ws, gen, s, since, reply, err));
  }

  _sendHistory(ws, s, keepBuffer = false) {
    s._pending = true;
    if (!keepBuffer) s._buffer = [];
    const gen = this._gen;
    this._send(ws, { op: 'history', channel: s.channel, since: { offset: s._pos.offset, epoch: s._pos.epoch } },
      (reply, err) => this._onPosition(ws, gen, s, true, reply, err));
  }

  _onPosition(ws, gen, s, since, reply, err) {
    if (err || this._subs.get(s.channel) !== s || s._gen !== gen) return;
    if (reply.error) {
      const code = reply.error.code;
      if (code === 409) {
        // Already subscribed on this connection: the server did it itself
        // (the token's subs claim). Its subscribed push named the position
        // it started from; what came since (or since ours) comes from
        // history, pushes meanwhile wait.
        const p = this._serverSubs.get(s.channel);
        if (!s._hasPos && p && p.epoch) s._setPos(p);
        if (s._hasPos) {
          this._sendHistory(ws, s, true);
          return;
        }
      } else if ([400, 403, 404, 413].includes(code)) {
        this._subs.delete(s.channel);
        s._fail(new WsedgeError(code, reply.error.message));
        return;
      } else {
        // 429, 500, 503: restore it on a new connection, after backoff
        ws.close(4000, 'resubscribe failed');
        return;
      }
    } else {
      const res = reply.result || {};
      if (!since) {
        s._setPos(res);
      } else if (res.recovered && res.epoch === s._pos.epoch) {
        for (const p of res.publications || []) s._deliver(p.offset, p.data);
      } else {
        s._setPos(res);
        if (s._onUnrecovered) {
          try { s._onUnrecovered({ offset: s._pos.offset, epoch: s._pos.epoch }); } catch (e) { setTimeout(() => { throw e; }); }
        }
      }
    }
    s._pending = false;
    const buffered = s._buffer;
    s._buffer = [];
    for (const b of buffered) s._deliver(b.offset, b.data);
    s._confirm();
  }

  /**
   * Publishes data (any JSON value) on channel; resolves with the
   * publication's {offset, epoch} once the server acknowledged it. While
   * disconnected it waits in the offline queue (bounded: rejects with
   * code "queue_full" over it) and goes out in call order after the next
   * connection's subscriptions. Rejects with "timeout" after
   * commandTimeout (queue wait included), "connection_lost" if the
   * connection ended after it was sent (it is never sent twice), or the
   * server's error.
   */
  publish(channel, data) {
    return new Promise((resolve, reject) => {
      if (!CHANNEL.test(channel) || channel.length > 255) return reject(new WsedgeError(ErrorCode.BadChannel, 'bad channel name: ' + channel));
      if (this._state === State.Closed) return reject(new WsedgeError(ErrorCode.Closed, 'client closed'));
      const connected = this._state === State.Connected && this._ws;
      if (!connected) {
        if (this.opts.offlineQueue === 0) return reject(new WsedgeError(ErrorCode.Offline, 'not connected'));
        if (this._queue.length >= this.opts.offlineQueue) return reject(new WsedgeError(ErrorCode.QueueFull, 'offline queue full'));
      }
      const item = { cmd: { op: 'publish', channel, data }, call: null };
      const timer = setTimeout(() => {
        const i = this._queue.indexOf(item);
        if (i >= 0) this._queue.splice(i, 1);
        if (item.call) this._calls.delete(item.call.id);
        item.done(null, new WsedgeError(ErrorCode.Timeout, 'no reply within ' + this.opts.commandTimeout + ' ms'));
      }, this.opts.commandTimeout);
      let settled = false;
      item.done = (reply, err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) reject(err);
        else if (reply.error) reject(new WsedgeError(reply.error.code, reply.error.message));
        else resolve(reply.result || {});
      };
      this._queue.push(item);
      if (connected) this._flush();
    });
  }

  _flush() {
    const ws = this._ws;
    while (ws && this._state === State.Connected && this._queue.length > 0) {
      const item = this._queue.shift();
      item.call = this._send(ws, item.cmd, item.done);
    }
  }
}

/** One channel the client stays subscribed to across reconnects. */
export class Subscription {
  constructor(client, channel, handler, opts) {
    this.client = client;
    this.channel = channel;
    this._handler = handler;
    this._onUnrecovered = opts.onUnrecovered;
    this._onEnd = opts.onEnd;
    this._pos = { offset: 0, epoch: '' };
    this._hasPos = false;
    this._gen = 0;
    this._pending = false;
    this._buffer = [];
    this._gone = false;
    this._settled = false;
    this.ready = new Promise((resolve, reject) => { this._resolve = resolve; this._reject = reject; });
    this.ready.catch(() => {}); // no unhandled rejection when the application never awaits ready
  }

  /** The position of the last publication delivered. */
  get position() { return { ...this._pos }; }

  _setPos(res) {
    this._pos = { offset: res.offset || 0, epoch: res.epoch || '' };
    this._hasPos = !!res.epoch;
  }

  _push(offset, data) {
    if (this._pending) this._buffer.push({ offset, data });
    else this._deliver(offset, data);
  }

  _deliver(offset, data) {
    if (this._gone) return;
    if (this._hasPos) {
      if (offset <= this._pos.offset) return;
      this._pos.offset = offset;
    }
    try {
      this._handler({ channel: this.channel, offset: offset || 0, epoch: this._pos.epoch, data });
    } catch (e) {
      setTimeout(() => { throw e; });
    }
  }

  _confirm() {
    if (!this._settled) {
      this._settled = true;
      this._resolve(this);
    }
  }

  _fail(err) {
    this._gone = true;
    if (!this._settled) {
      this._settled = true;
      this._reject(err);
    } else if (this._onEnd) {
      this._onEnd(err);
    }
  }

  /** Ends the subscription; nothing is delivered after this call. */
  unsubscribe() {
    const c = this.client;
    this._gone = true;
    if (c._subs.get(this.channel) !== this) return Promise.resolve();
    c._subs.delete(this.channel);
    const ws = c._ws;
    if (!ws || c._state !== State.Connected || this._gen !== c._gen) return Promise.resolve();
    return new Promise((resolve) => c._send(ws, { op: 'unsubscribe', channel: this.channel }, () => resolve()));
  }
}
