'use strict';
// The seed's JavaScript client (websocket-service-spec.ru.md §8), run in Node against a live
// server by the tests in tests/e2e (started through tests/support/node_seed.py).
//
// The TrackerWebSocket class is not copied here: it is loaded from the demo page's script
// tracker_ws/web/static/tracker-ws.js, the seed's class verbatim but for the one line of
// connect() that builds the URL (from the page's `location`). That file is a plain browser
// script, so it is evaluated here with the two browser globals it uses provided:
//   1. `WebSocket`: the `ws` package (Node 20 has no global WebSocket);
//   2. `location`: protocol and host taken from TRACKER_WS_URL (ws: -> http:, wss: -> https:,
//      which connect() maps back), whose path must be /ws, the path connect() appends.
// Everything the driver needs (raw messages, outgoing frames, exit) is hooked from outside by
// wrapping instance methods; the class itself is not edited.
const fs = require('fs');
const path = require('path');
const vm = require('vm');
const WebSocket = require('ws');

const CLASS_FILE = path.resolve(__dirname, '../../tracker_ws/web/static/tracker-ws.js');

// The class as the browser gets it: the script evaluated as a classic script in this context.
function loadTrackerWebSocket(wsUrl) {
  const url = new URL(wsUrl);
  if (!['ws:', 'wss:'].includes(url.protocol) || url.pathname !== '/ws' || url.search) {
    console.error(`TRACKER_WS_URL must be ws[s]://host:port/ws (what connect() builds): ${wsUrl}`);
    process.exit(2);
  }
  globalThis.WebSocket = WebSocket;
  globalThis.location = { protocol: url.protocol === 'wss:' ? 'https:' : 'http:', host: url.host };
  const source = fs.readFileSync(CLASS_FILE, 'utf8');
  return vm.runInThisContext(`${source}\nTrackerWebSocket`, { filename: CLASS_FILE });
}

// ---------------------------------------------------------------- driver -------------------
// Config: JSON in argv[2] or TRACKER_CLIENT_CONFIG:
//   {"token": "...", "vehicleIds": ["uuid", ...], "durationMs": 30000, "raw": true,
//    "stopOnStdinEnd": false,
//    "subscriptions": [{"subscriptionType": "geoEvents", "filter": {"type": "all"}}, ...]}
// `subscriptions`, when given, replaces the default single `vehicles` subscription (byIds of
// `vehicleIds`, or all).
// stdout: one JSON object per line: {"cb": ...} per callback, {"raw": message} per message,
// {"out": message, "open": bool} per send() call, {"ready": true} once every subscription was
// answered `subscribed`, {"done": ...} at the end. The class's console output goes to stderr.

const config = JSON.parse(process.argv[2] || process.env.TRACKER_CLIENT_CONFIG || '{}');
const token = config.token || process.env.TRACKER_WS_TOKEN;
if (!process.env.TRACKER_WS_URL || !token) {
  console.error('usage: TRACKER_WS_URL=ws://host:port/ws node seed_client.js \'{"token":"…"}\'');
  process.exit(2);
}

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
// The class logs with console.log/console.error: keep stdout for JSON lines only, and print
// error objects (the `ws` ErrorEvent is a huge object graph) as their message.
const brief = (a) => (typeof a === 'string' ? a : a?.message ?? JSON.stringify(a));
console.log = (...args) => process.stderr.write(args.map(brief).join(' ') + '\n');
console.error = console.log;

const TrackerWebSocket = loadTrackerWebSocket(process.env.TRACKER_WS_URL);
const ws = new TrackerWebSocket(token);
let currentEventId = null; // eventId of the message whose callbacks are running
let ready = false;
let finished = false;
let subscribedCount = 0;

// Hooks from outside: wrap the instance's handleMessage and send (the class calls both
// through `this`, so instance properties take precedence over the prototype methods).
const seedHandleMessage = ws.handleMessage.bind(ws);
ws.handleMessage = (message) => {
  const t = Date.now();
  if (config.raw !== false) emit({ raw: message, t });
  currentEventId = message.eventId;
  seedHandleMessage(message);
  currentEventId = null;
  if (message.type === 'subscribed') subscribedCount += 1;
  if (message.type === 'subscribed' && !ready && subscribedCount >= wanted.length) {
    ready = true;
    emit({ ready: true, t });
  }
};
const seedSend = ws.send.bind(ws);
ws.send = (message) => {
  // `open` false: the seed's send() drops it (restoreSubscriptions re-sends it on open).
  emit({ out: message, open: ws.ws?.readyState === WebSocket.OPEN, t: Date.now() });
  seedSend(message);
};

ws.onPositionUpdate = (vehicleId, position, status, sensors) => {
  const t = Date.now();
  emit({ cb: 'position', vehicleId, position, status, sensors, eventId: currentEventId, t });
};
ws.onGeoEvent = (event) => emit({ cb: 'geoEvent', event, eventId: currentEventId, t: Date.now() });
ws.onNotification = (notification) =>
  emit({ cb: 'notification', notification, eventId: currentEventId, t: Date.now() });
ws.onSystemAlert = (level, message) =>
  emit({ cb: 'systemAlert', level, message, eventId: currentEventId, t: Date.now() });
ws.onMaxReconnectReached = () => {
  emit({ done: finished ? 'disconnected' : 'max reconnect attempts reached', t: Date.now() });
  process.exit(finished ? 0 : 1);
};

function finish(why) {
  if (finished) return;
  finished = true;
  emit({ finishing: why, lastEventId: ws.lastEventId, t: Date.now() });
  // The seed's disconnect() closes the socket, and its onclose then schedules a reconnect:
  // with no attempts left, scheduleReconnect calls onMaxReconnectReached (above) instead.
  ws.maxReconnectAttempts = 0;
  ws.disconnect();
  setTimeout(() => process.exit(0), 3000).unref(); // in case no close event ever comes
}

ws.connect();
// As in the seed's usage example: subscribe right after connect(). The socket is not open yet,
// so send() drops the frame; it is kept in this.subscriptions and sent by restoreSubscriptions()
// from onopen (the `out` lines show both).
const ids = config.vehicleIds || [];
const wanted = config.subscriptions || [
  { subscriptionType: 'vehicles', filter: ids.length ? { type: 'byIds', ids } : { type: 'all' } },
];
wanted.forEach((s) => ws.subscribe(s.subscriptionType, s.filter));

setTimeout(() => finish('duration'), config.durationMs ?? 30000);
if (config.stopOnStdinEnd) {
  process.stdin.on('end', () => finish('stdin closed'));
  process.stdin.resume();
}
process.on('SIGTERM', () => finish('SIGTERM'));
process.on('SIGINT', () => finish('SIGINT'));
