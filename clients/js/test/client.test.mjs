// The client's state machine against a fake socket and mocked timers (no network).
import assert from 'node:assert/strict';
import { afterEach, beforeEach, mock, test } from 'node:test';

import { CLOSE_CODES, TrackerWebSocket } from '../dist/index.js';

class FakeSocket {
  static all = [];
  constructor(url, protocols) {
    this.url = new URL(url);
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    FakeSocket.all.push(this);
  }
  static last() {
    return FakeSocket.all[FakeSocket.all.length - 1];
  }
  send(data) {
    assert.equal(this.readyState, 1, 'send on a socket that is not open');
    this.sent.push(JSON.parse(data));
  }
  close(code, reason) {
    this.closedWith = { code, reason };
    this.readyState = 3;
    // As a real socket: the close event comes later.
    queueMicrotask(() => this.onclose?.({ code: 1005, reason: '' }));
  }
  // --- the server's side
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  deliver(message) {
    this.onmessage?.({ data: JSON.stringify({ eventId: 0, ...message }) });
  }
  hello(extra = {}) {
    this.open();
    this.deliver({ type: 'connected', connectionId: `c${FakeSocket.all.length}`, ...extra });
  }
  serverClose(code, reason = '') {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  types() {
    return this.sent.map((m) => m.type);
  }
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

function client(options = {}, token = 'tok-1') {
  const states = [];
  const c = new TrackerWebSocket(token, {
    url: 'ws://tracker.test/ws',
    WebSocket: FakeSocket,
    diagnoseHandshake: false,
    random: () => 0.5,
    logger: null,
    ...options,
  });
  c.onStateChange = (s) => states.push(s);
  return { c, states };
}

beforeEach(() => {
  FakeSocket.all = [];
  mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
});
afterEach(() => mock.timers.reset());

test('the token goes in the bearer subprotocol, not in the URL', () => {
  const { c } = client();
  c.connect();
  const s = FakeSocket.last();
  assert.deepEqual(s.protocols, ['bearer', 'tok-1']);
  assert.equal(s.url.searchParams.get('token'), null);
  assert.equal(s.url.searchParams.get('lastEventId'), null, 'nothing to recover yet');
  assert.equal(s.url.pathname, '/ws');
  c.disconnect();
});

test('tokenInQuery and params put them in the query string', () => {
  const { c } = client({ tokenInQuery: true, params: { device: 'phone' } });
  c.connect();
  const s = FakeSocket.last();
  assert.equal(s.protocols, undefined);
  assert.equal(s.url.searchParams.get('token'), 'tok-1');
  assert.equal(s.url.searchParams.get('device'), 'phone');
  c.disconnect();
});

test('subscriptions made before open are sent after connected, then getState', () => {
  const { c, states } = client();
  c.connect();
  c.subscribe('vehicles', { type: 'byIds', ids: ['a', 'b'] });
  c.subscribeGeoEvents();
  const s = FakeSocket.last();
  s.hello({ recovered: false, reason: 'no_state' });
  assert.deepEqual(s.types(), ['subscribe', 'subscribe', 'getState']);
  assert.deepEqual(s.sent[2], { type: 'getState', vehicleIds: ['a', 'b'] });
  assert.equal(c.connected.recovered, false);
  assert.equal(c.connected.reason, 'no_state');
  assert.deepEqual(
    states.map((x) => x.state),
    ['connecting', 'open'],
  );
  assert.equal(states[1].connected.reason, 'no_state');
  c.disconnect();
});

test('a drop reconnects with lastEventId; recovered: resubscribe, no getState', async () => {
  const { c, states } = client();
  const geo = [];
  c.onGeoEvent = (e, m) => geo.push(m.eventId);
  c.connect();
  c.subscribeVehicles();
  c.subscribeGeoEvents();
  const first = FakeSocket.last();
  first.hello({ recovered: false, reason: 'no_state' });
  first.deliver({ type: 'geoEvent', eventId: 41, event: { geozoneId: 'z' } });
  first.deliver({ type: 'positionBatch', eventId: 57, positions: [] });
  first.serverClose(CLOSE_CODES.RESTART, 'service restart');
  await settle();
  const r = states[states.length - 1];
  assert.equal(r.state, 'reconnecting');
  assert.equal(r.code, 1012);
  assert.equal(r.reason, 'service restart');
  assert.equal(r.attempt, 1);
  assert.equal(r.delayMs, 375); // 500 * (0.5 + 0.5 * 0.5)
  assert.equal(FakeSocket.all.length, 1, 'not before the delay');
  mock.timers.tick(374);
  assert.equal(FakeSocket.all.length, 1);
  mock.timers.tick(1);
  assert.equal(FakeSocket.all.length, 2);
  const second = FakeSocket.last();
  assert.equal(second.url.searchParams.get('lastEventId'), '57');
  second.hello({ recovered: true, restoredSubscriptions: 2 });
  assert.deepEqual(second.types(), ['subscribe', 'subscribe']);
  assert.equal(c.reconnectAttempts, 0);
  // A replayed frame delivered again is dropped; a new one passes.
  second.deliver({ type: 'geoEvent', eventId: 41, event: { geozoneId: 'z' } });
  second.deliver({ type: 'geoEvent', eventId: 60, event: { geozoneId: 'y' } });
  assert.deepEqual(geo, [41, 60]);
  assert.equal(c.duplicatesDropped, 1);
  assert.deepEqual(
    states.map((x) => x.state),
    ['connecting', 'open', 'reconnecting', 'connecting', 'open'],
  );
  c.disconnect();
});

test('by default it never gives up; delays stay under the cap', async () => {
  const { c, states } = client({ random: () => 1 - 1e-12 });
  c.connect();
  for (let i = 0; i < 60; i++) {
    FakeSocket.last().serverClose(CLOSE_CODES.ABNORMAL);
    await settle();
    const r = states[states.length - 1];
    assert.equal(r.state, 'reconnecting', `attempt ${i}`);
    assert.ok(r.delayMs <= 30_000 && r.delayMs > 0, `${r.delayMs}`);
    mock.timers.tick(r.delayMs);
  }
  assert.equal(FakeSocket.all.length, 61);
  const delays = states.filter((s) => s.state === 'reconnecting').map((s) => s.delayMs);
  assert.deepEqual(delays.slice(0, 4), [500, 1000, 2000, 4000]);
  assert.equal(delays[59], 30_000);
  c.disconnect();
});

test('maxRetries: gives up after that many retries and says so', async () => {
  const { c, states } = client({ maxRetries: 2 });
  let gaveUp = 0;
  c.onMaxReconnectReached = () => gaveUp++;
  c.connect();
  for (let i = 0; i < 3; i++) {
    FakeSocket.last().serverClose(CLOSE_CODES.ABNORMAL, 'gone');
    await settle();
    mock.timers.tick(60_000);
  }
  assert.equal(FakeSocket.all.length, 3);
  assert.equal(gaveUp, 1);
  assert.equal(c.state, 'closed');
  assert.deepEqual(states[states.length - 1], {
    state: 'closed',
    attempt: 2,
    code: 1006,
    reason: 'gone',
  });
});

test('disconnect() stays disconnected: no retry from the old socket or a pending timer', async () => {
  const { c, states } = client();
  c.connect();
  FakeSocket.last().hello({ recovered: false });
  c.disconnect();
  assert.deepEqual(FakeSocket.last().closedWith, { code: 1000, reason: 'Client disconnect' });
  await settle(); // the old socket's close event
  mock.timers.tick(10 * 60_000);
  assert.equal(FakeSocket.all.length, 1);
  assert.equal(c.state, 'closed');
  // During a retry wait too.
  c.connect();
  assert.equal(FakeSocket.all.length, 2);
  FakeSocket.last().serverClose(CLOSE_CODES.ABNORMAL);
  await settle();
  assert.equal(c.state, 'reconnecting');
  c.disconnect();
  mock.timers.tick(10 * 60_000);
  await settle();
  assert.equal(FakeSocket.all.length, 2);
  assert.equal(states[states.length - 1].state, 'closed');
  assert.equal(c.send({ type: 'ping' }), false);
});

for (const code of [CLOSE_CODES.TOKEN_EXPIRED, CLOSE_CODES.KICKED, CLOSE_CODES.UNAUTHORIZED]) {
  test(`close ${code} without getToken is final`, async () => {
    const { c, states } = client();
    c.connect();
    FakeSocket.last().hello({ recovered: false });
    FakeSocket.last().serverClose(code, 'token problem');
    await settle();
    mock.timers.tick(10 * 60_000);
    assert.equal(FakeSocket.all.length, 1);
    assert.deepEqual(states[states.length - 1], {
      state: 'closed',
      attempt: 0,
      code,
      reason: 'token problem',
    });
  });
}

test('close 4002 with getToken: reconnects at once with the fresh token; same token: final', async () => {
  let next = 'tok-2';
  const { c, states } = client({ getToken: async () => next }, null);
  c.connect();
  await settle();
  assert.deepEqual(FakeSocket.last().protocols, ['bearer', 'tok-2']);
  FakeSocket.last().hello({ recovered: false });
  next = 'tok-3';
  FakeSocket.last().serverClose(CLOSE_CODES.TOKEN_EXPIRED, 'token expired');
  await settle();
  mock.timers.tick(0);
  await settle();
  assert.equal(FakeSocket.all.length, 2);
  assert.deepEqual(FakeSocket.last().protocols, ['bearer', 'tok-3']);
  FakeSocket.last().hello({ recovered: true });
  // getToken keeps giving the refused token: stop.
  FakeSocket.last().serverClose(CLOSE_CODES.TOKEN_EXPIRED, 'token expired');
  await settle();
  mock.timers.tick(10 * 60_000);
  await settle();
  assert.equal(FakeSocket.all.length, 2);
  assert.equal(states[states.length - 1].state, 'closed');
  assert.equal(states[states.length - 1].code, 4002);
});

test('no pong within pongTimeoutMs: the socket is dropped and a reconnect scheduled', async () => {
  const { c, states } = client({ pingIntervalMs: 1000, pongTimeoutMs: 500 });
  c.connect();
  const s = FakeSocket.last();
  s.hello({ recovered: false });
  mock.timers.tick(1000);
  assert.equal(s.types().at(-1), 'ping');
  s.deliver({ type: 'pong' }); // answered: nothing happens
  mock.timers.tick(999);
  assert.equal(c.state, 'open');
  mock.timers.tick(1); // second ping, never answered
  mock.timers.tick(499);
  assert.equal(c.state, 'open');
  mock.timers.tick(1);
  assert.deepEqual(s.closedWith, { code: 4000, reason: 'pong timeout' });
  const r = states[states.length - 1];
  assert.equal(r.state, 'reconnecting');
  assert.equal(r.code, CLOSE_CODES.PONG_TIMEOUT);
  await settle(); // the old socket's late close event changes nothing
  mock.timers.tick(r.delayMs);
  assert.equal(FakeSocket.all.length, 2);
  c.disconnect();
});

test('positionBatch passes status, sensors and the name; position the seed arguments', () => {
  const { c } = client();
  const got = [];
  c.onPositionUpdate = (...args) => got.push(args);
  c.connect();
  const s = FakeSocket.last();
  s.hello({ recovered: false });
  const position = { lat: 1, lon: 2, speed: 3, course: 4, timestamp: 't' };
  s.deliver({ type: 'position', eventId: 5, vehicleId: 'v1', position });
  s.deliver({
    type: 'positionBatch',
    eventId: 7,
    positions: [
      { vehicleId: 'v2', vehicleName: 'A123', position, status: 'moving', sensors: { fuel: 1 } },
    ],
  });
  assert.deepEqual(got, [
    ['v1', position],
    ['v2', position, 'moving', { fuel: 1 }, 'A123'],
  ]);
  assert.equal(c.lastEventId, 7);
  c.disconnect();
});

test('a refused handshake is asked over HTTP: a bad token is final, with the reason', async (t) => {
  const calls = [];
  const replies = [
    { status: 503, body: { code: 'UNAVAILABLE', message: 'instance is starting' } },
    { status: 401, body: { code: 'UNAUTHORIZED', message: 'invalid token: bad signature' } },
  ];
  t.mock.method(globalThis, 'fetch', async (url, init) => {
    calls.push({ url: String(url), auth: init.headers.Authorization });
    const r = replies.shift();
    return new Response(JSON.stringify(r.body), { status: r.status });
  });
  const { c, states } = client({ diagnoseHandshake: true });
  c.connect();
  FakeSocket.last().serverClose(CLOSE_CODES.ABNORMAL);
  await settle();
  await settle();
  let last = states[states.length - 1];
  assert.equal(last.state, 'reconnecting');
  assert.match(last.reason, /HTTP 503: instance is starting/);
  mock.timers.tick(last.delayMs);
  FakeSocket.last().serverClose(CLOSE_CODES.ABNORMAL);
  await settle();
  await settle();
  last = states[states.length - 1];
  assert.deepEqual(last, {
    state: 'closed',
    attempt: 1,
    code: 4001,
    reason: 'UNAUTHORIZED: invalid token: bad signature',
  });
  assert.equal(calls[0].url, 'http://tracker.test/ws');
  assert.equal(calls[0].auth, 'Bearer tok-1');
  mock.timers.tick(10 * 60_000);
  assert.equal(FakeSocket.all.length, 2);
});

test('an attempt whose handshake never completes is given up after connectTimeoutMs', async () => {
  const { c, states } = client({ connectTimeoutMs: 3_000 });
  c.connect();
  const stuck = FakeSocket.last();
  mock.timers.tick(2_999);
  assert.equal(stuck.closedWith, null, 'not before the timeout');
  mock.timers.tick(1);
  assert.ok(stuck.closedWith, 'the stuck socket is closed');
  const r = states[states.length - 1];
  assert.equal(r.state, 'reconnecting');
  assert.equal(r.reason, 'connect timeout');
  await settle();
  assert.equal(states[states.length - 1], r, "the stuck socket's late close changes nothing");
  mock.timers.tick(r.delayMs);
  assert.equal(FakeSocket.all.length, 2);
  FakeSocket.last().hello();
  mock.timers.tick(20_000); // past the connect timeout, before the first ping: still open
  assert.equal(FakeSocket.all.length, 2);
  assert.equal(c.state, 'open');
  c.disconnect();
});
