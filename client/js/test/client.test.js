// Unit tests of wsedge.js against a scripted WebSocket: backoff, the state
// machine, disconnect pushes, recovery and dedup, the offline queue.
// Run: node --test client/js/test/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Client, State, backoffDelay, WsedgeError, ErrorCode } from '../wsedge.js';

// FakeSocket plays the server: the test reads what the client sent and
// answers with open/message/close events.
class FakeSocket {
  static all = [];
  static refuse = 0; // the next n sockets close (1006) without opening
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.sent = [];
    this.closed = null;
    FakeSocket.all.push(this);
    queueMicrotask(() => {
      if (FakeSocket.refuse > 0) {
        FakeSocket.refuse--;
        this.onclose?.({ code: 1006 });
      } else {
        this.onopen?.();
      }
    });
  }
  send(s) { this.sent.push(JSON.parse(s)); }
  close(code) {
    if (this.closed) return;
    this.closed = code;
    queueMicrotask(() => this.onclose?.({ code }));
  }
  // server side
  push(msg) { this.onmessage?.({ data: JSON.stringify(msg) }); }
  reply(cmd, result) { this.push(result === undefined ? { id: cmd.id, ok: true } : { id: cmd.id, ok: true, result }); }
  fail(cmd, code, message) { this.push({ id: cmd.id, error: { code, message } }); }
  drop(code = 1006) { this.closed = code; this.onclose?.({ code }); }
  static last() { return FakeSocket.all[FakeSocket.all.length - 1]; }
  static reset() { FakeSocket.all = []; FakeSocket.refuse = 0; }
}

const until = async (what, fn, ms = 2000) => {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 2));
  }
};
const sentOp = (ws, op, n = 0) => until(`${op} #${n}`, () => ws.sent.filter((c) => c.op === op)[n]);

function newClient(opts = {}) {
  FakeSocket.reset();
  const c = new Client('ws://test/ws', {
    WebSocket: FakeSocket,
    backoff: { min: 10, max: 40, factor: 2 },
    random: () => 0.5,
    commandTimeout: 500,
    ...opts,
  });
  const states = [];
  c.on('state', (e) => states.push(e));
  return { c, states };
}

test('backoff: full jitter under a ceiling growing to max', () => {
  const b = { min: 500, max: 20000, factor: 2 };
  assert.equal(backoffDelay(0, b, 0), 0);
  assert.equal(backoffDelay(0, b, 0.5), 250);
  assert.equal(backoffDelay(3, b, 0.5), 2000);
  assert.equal(backoffDelay(6, b, 0.999), 20000 * 0.999);
  assert.equal(backoffDelay(500, b, 1), 20000); // no overflow past max
  for (let n = 0; n < 10; n++) {
    for (let i = 0; i < 100; i++) {
      const d = backoffDelay(n, b, Math.random());
      assert.ok(d >= 0 && d <= Math.min(20000, 500 * 2 ** n), `attempt ${n}: ${d}`);
    }
  }
});

test('states: connecting → connected → disconnected → connecting …, closed is terminal', async () => {
  const { c, states } = newClient({ getToken: async () => 'T0K' });
  c.connect();
  await until('connected', () => c.state === State.Connected);
  assert.deepEqual(FakeSocket.last().protocols, ['wsedge.v1.json', 'token.T0K']);
  FakeSocket.refuse = 2;
  FakeSocket.last().drop();
  await until('reconnected', () => FakeSocket.all.length === 4 && c.state === State.Connected);
  const path = states.map((s) => s.to);
  assert.deepEqual(path, ['connecting', 'connected', 'disconnected', 'connecting', 'disconnected', 'connecting', 'disconnected', 'connecting', 'connected']);
  for (let i = 1; i < states.length; i++) assert.equal(states[i].from, states[i - 1].to);
  // Backoff grows per failed attempt (random fixed at 0.5): 5, 10, 20 ms.
  assert.deepEqual(states.filter((s) => s.to === 'disconnected').map((s) => s.delay), [5, 10, 20]);
  c.close();
  assert.equal(c.state, State.Closed);
  assert.equal(states.at(-1).to, 'closed');
  assert.equal(FakeSocket.last().closed, 1000);
  const n = FakeSocket.all.length;
  await new Promise((r) => setTimeout(r, 60)); // longer than any backoff: nothing may dial now
  assert.equal(FakeSocket.all.length, n);
});

test('disconnect push: no reconnect on refusal, delay honoured on drain', async () => {
  const { c, states } = newClient();
  c.connect();
  await until('connected', () => c.state === State.Connected);
  FakeSocket.last().push({ disconnect: { code: 4001, reason: 'shutdown', reconnect: true, delay: 150 } });
  const t0 = Date.now();
  FakeSocket.last().drop(1001);
  await until('reconnected', () => FakeSocket.all.length === 2 && c.state === State.Connected);
  assert.ok(Date.now() - t0 >= 140, `reconnected after ${Date.now() - t0} ms, before the 150 ms the server named`);
  assert.equal(states.find((s) => s.to === 'disconnected').delay, 150);
  assert.equal(states.find((s) => s.to === 'disconnected').code, 4001);
  FakeSocket.last().push({ disconnect: { code: 4003, reason: 'invalid token', reconnect: false } });
  FakeSocket.last().drop(1008);
  await until('closed', () => c.state === State.Closed);
  assert.equal(states.at(-1).code, 4003);
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(FakeSocket.all.length, 2, 'dialed again after a disconnect that forbids it');
});

test('recovery: resubscribe with since, deliver missed in order, drop duplicates', async () => {
  const { c } = newClient();
  c.connect();
  await until('connected', () => c.state === State.Connected);
  const got = [];
  const unrec = [];
  const s = c.subscribe('chat:a', (p) => got.push(p.offset + ':' + p.data), { onUnrecovered: (p) => unrec.push(p) });
  let ws = FakeSocket.last();
  let cmd = await sentOp(ws, 'subscribe');
  assert.equal(cmd.since, undefined);
  ws.push({ channel: 'chat:a', offset: 6, data: 'early' }); // before the reply: buffered
  ws.reply(cmd, { offset: 5, epoch: 'E' });
  await s.ready;
  ws.push({ channel: 'chat:a', offset: 6, data: 'dup' });
  ws.push({ channel: 'chat:a', offset: 7, data: 'x' });
  assert.deepEqual(got, ['6:early', '7:x']);
  ws.drop();
  await until('reconnected', () => FakeSocket.all.length === 2 && c.state === State.Connected);
  ws = FakeSocket.last();
  cmd = await sentOp(ws, 'subscribe');
  assert.deepEqual(cmd.since, { offset: 7, epoch: 'E' });
  ws.push({ channel: 'chat:a', offset: 10, data: 'live' }); // overtakes the recovery: waits
  ws.reply(cmd, { offset: 9, epoch: 'E', recovered: true, publications: [{ offset: 7, data: 'x' }, { offset: 8, data: 'm8' }, { offset: 9, data: 'm9' }] });
  assert.deepEqual(got, ['6:early', '7:x', '8:m8', '9:m9', '10:live']);
  // A lagged push: history since the last position fills the gap.
  ws.push({ lagged: { channel: 'chat:a', offset: 10 } });
  const h = await sentOp(ws, 'history');
  assert.deepEqual(h.since, { offset: 10, epoch: 'E' });
  ws.push({ channel: 'chat:a', offset: 13, data: 'm13' });
  ws.reply(h, { offset: 12, epoch: 'E', recovered: true, publications: [{ offset: 11, data: 'm11' }, { offset: 12, data: 'm12' }] });
  assert.deepEqual(got.slice(5), ['11:m11', '12:m12', '13:m13']);
  // New epoch: not recovered; the application is told and we go on from there.
  ws.drop();
  await until('reconnected', () => FakeSocket.all.length === 3 && c.state === State.Connected);
  ws = FakeSocket.last();
  cmd = await sentOp(ws, 'subscribe');
  ws.reply(cmd, { offset: 2, epoch: 'F', recovered: false, publications: [] });
  assert.deepEqual(unrec, [{ offset: 2, epoch: 'F' }]);
  ws.push({ channel: 'chat:a', offset: 3, data: 'f3' });
  assert.deepEqual(got.at(-1), '3:f3');
  assert.deepEqual(s.position, { offset: 3, epoch: 'F' });
  // The stream restarts while we stay subscribed (its history lost): a
  // reset push moves us to the new epoch, the application is told, and
  // the new stream's offsets (from 1 again) are delivered, not dropped.
  ws.push({ reset: { channel: 'chat:a', offset: 0, epoch: 'G' } });
  assert.deepEqual(unrec.at(-1), { offset: 0, epoch: 'G' });
  ws.push({ channel: 'chat:a', offset: 1, data: 'g1' });
  assert.deepEqual(got.at(-1), '1:g1');
  assert.deepEqual(s.position, { offset: 1, epoch: 'G' });
  c.close();
});

test('subscribe refused: ready rejects with the server code, the subscription is gone', async () => {
  const { c } = newClient();
  c.connect();
  await until('connected', () => c.state === State.Connected);
  const s = c.subscribe('vip:x', () => {});
  const cmd = await sentOp(FakeSocket.last(), 'subscribe');
  FakeSocket.last().fail(cmd, 403, 'permission denied');
  await assert.rejects(s.ready, (e) => e instanceof WsedgeError && e.code === 403);
  assert.throws(() => c.subscribe('bad', () => {}), (e) => e.code === ErrorCode.BadChannel);
  c.subscribe('vip:y', () => {});
  assert.throws(() => c.subscribe('vip:y', () => {}), (e) => e.code === ErrorCode.AlreadySubscribed);
  c.close();
});

test('offline queue: bounded, flushed in order after the subscriptions, each publish settles', async () => {
  const { c } = newClient({ offlineQueue: 3, commandTimeout: 2000 });
  c.subscribe('chat:a', () => {});
  const p = [c.publish('chat:a', { n: 1 }), c.publish('chat:a', { n: 2 }), c.publish('chat:a', { n: 3 })];
  await assert.rejects(c.publish('chat:a', { n: 4 }), (e) => e.code === ErrorCode.QueueFull);
  c.connect();
  await until('connected', () => c.state === State.Connected);
  const ws = FakeSocket.last();
  await sentOp(ws, 'publish', 2);
  assert.deepEqual(ws.sent.map((m) => m.op), ['subscribe', 'publish', 'publish', 'publish']);
  assert.deepEqual(ws.sent.slice(1).map((m) => m.data.n), [1, 2, 3]);
  const pubs = ws.sent.slice(1);
  ws.reply(pubs[0], { offset: 1, epoch: 'E' });
  ws.fail(pubs[1], 503, 'unavailable');
  assert.deepEqual(await p[0], { offset: 1, epoch: 'E' });
  await assert.rejects(p[1], (e) => e.code === 503);
  ws.drop(); // the third was sent and never answered: lost, never resent
  await assert.rejects(p[2], (e) => e.code === ErrorCode.ConnectionLost);
  await until('reconnected', () => FakeSocket.all.length === 2 && c.state === State.Connected);
  assert.equal(FakeSocket.last().sent.filter((m) => m.op === 'publish').length, 0);
  c.close();
  await assert.rejects(c.publish('chat:a', 1), (e) => e.code === ErrorCode.Closed);
});

test('offline queue off, and a publish times out', async () => {
  const { c } = newClient({ offlineQueue: 0, commandTimeout: 30 });
  await assert.rejects(c.publish('chat:a', 1), (e) => e.code === ErrorCode.Offline);
  c.connect();
  await until('connected', () => c.state === State.Connected);
  await assert.rejects(c.publish('chat:a', 1), (e) => e.code === ErrorCode.Timeout);
  c.close();
});

test('dead connection: a ping at half the read timeout, a reconnect at the timeout', async () => {
  const { c, states } = newClient({ readTimeout: 80 });
  c.connect();
  await until('connected', () => c.state === State.Connected);
  const ws = FakeSocket.last();
  await sentOp(ws, 'ping');
  await until('reconnected', () => FakeSocket.all.length === 2 && c.state === State.Connected);
  assert.equal(states.find((s) => s.to === 'disconnected').code, 4000);
  // A server that keeps talking (ping pushes) keeps the connection.
  const ws2 = FakeSocket.last();
  const keep = setInterval(() => ws2.push({ ping: {} }), 10);
  await new Promise((r) => setTimeout(r, 200));
  clearInterval(keep);
  assert.equal(FakeSocket.all.length, 2);
  c.close();
});

test('refresh push: a new token from getToken goes out in a refresh command', async () => {
  let n = 0;
  const { c } = newClient({ getToken: () => 'tok' + ++n });
  c.connect();
  await until('connected', () => c.state === State.Connected);
  FakeSocket.last().push({ refresh: {} });
  const r = await sentOp(FakeSocket.last(), 'refresh');
  assert.equal(r.token, 'tok2');
  c.close();
});

test("token subs: a 409 takes the subscribed push's position and fills the gap from history", async () => {
  const { c } = newClient();
  c.connect();
  await until('connected', () => c.state === State.Connected);
  let ws = FakeSocket.last();
  ws.push({ subscribed: { channel: 'user:ann', offset: 2, epoch: 'E' } });
  ws.push({ channel: 'user:ann', offset: 3, data: 'dropped: nobody subscribed yet' });
  const got = [];
  const s = c.subscribe('user:ann', (p) => got.push(p.offset));
  let cmd = await sentOp(ws, 'subscribe');
  ws.fail(cmd, 409, 'already subscribed');
  const h = await sentOp(ws, 'history');
  assert.deepEqual(h.since, { offset: 2, epoch: 'E' });
  ws.push({ channel: 'user:ann', offset: 5, data: 'held back' });
  ws.reply(h, { offset: 4, epoch: 'E', recovered: true, publications: [{ offset: 3, data: 'a' }, { offset: 4, data: 'b' }] });
  await s.ready;
  assert.deepEqual(got, [3, 4, 5]);
  ws.drop();
  await until('reconnected', () => FakeSocket.all.length === 2 && c.state === State.Connected);
  ws = FakeSocket.last();
  ws.push({ subscribed: { channel: 'user:ann', offset: 9, epoch: 'E' } });
  cmd = await sentOp(ws, 'subscribe');
  assert.deepEqual(cmd.since, { offset: 5, epoch: 'E' });
  ws.fail(cmd, 409, 'already subscribed');
  const h2 = await sentOp(ws, 'history');
  assert.deepEqual(h2.since, { offset: 5, epoch: 'E' }, 'our own position, not the newer one of the push');
  ws.reply(h2, { offset: 9, epoch: 'E', recovered: true, publications: [6, 7, 8, 9].map((o) => ({ offset: o, data: o })) });
  assert.deepEqual(got, [3, 4, 5, 6, 7, 8, 9]);
  c.close();
});
