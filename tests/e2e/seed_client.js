'use strict';
// The seed's JavaScript client (websocket-service-spec.ru.md §8), run in Node against a live
// server by tests/e2e/test_seed_client.py.
//
// The TrackerWebSocket class below is copied VERBATIM from the seed. The only two changes, both
// needed to run it in Node:
//   1. `const WebSocket = require('ws');` (browsers have a global WebSocket, Node does not);
//   2. the URL is built from process.env.TRACKER_WS_URL instead of `wss://tracker.example.com/ws`.
// Everything the driver needs (raw messages, outgoing frames, exit) is hooked from outside by
// wrapping instance methods; the class itself is not edited.
const WebSocket = require('ws');

// ---------------------------------------------------------------- seed §8 (verbatim) -------
class TrackerWebSocket {
  constructor(token) {
    this.token = token;
    this.ws = null;
    this.lastEventId = 0;
    this.subscriptions = new Map();
    this.reconnectAttempts = 0;
    this.maxReconnectAttempts = 5;
    this.heartbeatInterval = null;
  }

  connect() {
    const url = `${process.env.TRACKER_WS_URL}?token=${this.token}&lastEventId=${this.lastEventId}`;
    this.ws = new WebSocket(url);

    this.ws.onopen = () => {
      console.log('WebSocket connected');
      this.reconnectAttempts = 0;
      this.startHeartbeat();
      this.restoreSubscriptions();
    };

    this.ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      this.handleMessage(message);
    };

    this.ws.onclose = (event) => {
      console.log('WebSocket closed', event.code, event.reason);
      this.stopHeartbeat();
      this.scheduleReconnect();
    };

    this.ws.onerror = (error) => {
      console.error('WebSocket error', error);
    };
  }

  handleMessage(message) {
    // Обновляем lastEventId для восстановления
    if (message.eventId) {
      this.lastEventId = Math.max(this.lastEventId, message.eventId);
    }

    switch (message.type) {
      case 'connected':
        console.log('Connection established:', message.connectionId);
        break;

      case 'subscribed':
        console.log(`Subscribed to ${message.subscriptionType}: ${message.count} items`);
        break;

      case 'position':
        this.onPositionUpdate?.(message.vehicleId, message.position);
        break;

      case 'positionBatch':
        message.positions.forEach(p => {
          this.onPositionUpdate?.(p.vehicleId, p.position, p.status, p.sensors);
        });
        break;

      case 'geoEvent':
        this.onGeoEvent?.(message.event);
        break;

      case 'notification':
        this.onNotification?.(message.notification);
        break;

      case 'systemAlert':
        this.onSystemAlert?.(message.level, message.message);
        break;

      case 'pong':
        // Heartbeat response
        break;

      case 'error':
        console.error('Server error:', message.code, message.message);
        break;
    }
  }

  subscribe(subscriptionType, filter) {
    const message = {
      type: 'subscribe',
      subscriptionType,
      filter
    };
    this.subscriptions.set(`${subscriptionType}:${JSON.stringify(filter)}`, message);
    this.send(message);
  }

  unsubscribe(subscriptionType, filter = null) {
    const message = {
      type: 'unsubscribe',
      subscriptionType,
      filter
    };
    this.subscriptions.delete(`${subscriptionType}:${JSON.stringify(filter)}`);
    this.send(message);
  }

  getState(vehicleIds = null) {
    this.send({
      type: 'getState',
      vehicleIds
    });
  }

  send(message) {
    if (this.ws?.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(message));
    }
  }

  startHeartbeat() {
    this.heartbeatInterval = setInterval(() => {
      this.send({ type: 'ping' });
    }, 30000);
  }

  stopHeartbeat() {
    if (this.heartbeatInterval) {
      clearInterval(this.heartbeatInterval);
      this.heartbeatInterval = null;
    }
  }

  restoreSubscriptions() {
    this.subscriptions.forEach(message => {
      this.send(message);
    });
  }

  scheduleReconnect() {
    if (this.reconnectAttempts < this.maxReconnectAttempts) {
      const delay = Math.min(1000 * Math.pow(2, this.reconnectAttempts), 30000);
      console.log(`Reconnecting in ${delay}ms...`);
      setTimeout(() => {
        this.reconnectAttempts++;
        this.connect();
      }, delay);
    } else {
      console.error('Max reconnect attempts reached');
      this.onMaxReconnectReached?.();
    }
  }

  disconnect() {
    this.stopHeartbeat();
    this.ws?.close(1000, 'Client disconnect');
  }
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
