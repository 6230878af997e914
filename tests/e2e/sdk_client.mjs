// The client SDK (clients/js, compiled in clients/js/dist) run in Node against a live server,
// by tests/e2e/test_sdk_outage.py through tests/support/node_sdk.py. One JSON line per event:
//   {"state": …}                       every connection-state change (StateChange)
//   {"connected": …}                   every `connected` frame (ConnectedInfo)
//   {"cb": "geoEvent"|"notification"|"systemAlert"|"position", "eventId", "marker", …}
//   {"ready": true}                    once every subscription was answered
//   {"done": …}                        after disconnect() (stdin closed), then it exits 0
// Configuration: argv[2] is JSON {url, token, subscriptions: [{subscriptionType, filter}],
// options: {…TrackerOptions}, durationMs}.
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const sdkDir = path.resolve(here, '../../clients/js');
const WebSocket = createRequire(path.join(sdkDir, 'package.json'))('ws');
const { TrackerWebSocket } = await import(path.join(sdkDir, 'dist/index.js'));

const config = JSON.parse(process.argv[2]);
const emit = (obj) => process.stdout.write(`${JSON.stringify({ ...obj, t: Date.now() })}\n`);

const client = new TrackerWebSocket(config.token, {
  url: config.url,
  WebSocket,
  logger: { warn: (...args) => console.error(...args) },
  ...(config.options || {}),
});
let subscribed = 0;
let ready = false;
client.onStateChange = (s) => emit({ state: s });
client.onConnected = (info) => emit({ connected: info });
client.onSubscribed = () => {
  subscribed += 1;
  if (!ready && subscribed >= config.subscriptions.length) {
    ready = true;
    emit({ ready: true });
  }
};
client.onGeoEvent = (e, m) => emit({ cb: 'geoEvent', eventId: m.eventId, marker: e.geozoneId });
client.onNotification = (n, m) => emit({ cb: 'notification', eventId: m.eventId, marker: n.id });
client.onSystemAlert = (level, text, m) => emit({ cb: 'systemAlert', eventId: m.eventId, marker: text });
client.onPositionUpdate = (vehicleId, position, status) =>
  emit({ cb: 'position', vehicleId, lat: position.lat, status });
client.onError = (code, text) => emit({ error: code, message: text });

for (const s of config.subscriptions) client.subscribe(s.subscriptionType, s.filter);
client.connect();

let finished = false;
function finish(why) {
  if (finished) return;
  finished = true;
  client.disconnect();
  emit({
    done: why,
    state: client.state,
    lastEventId: client.lastEventId,
    duplicatesDropped: client.duplicatesDropped,
  });
  process.exit(0);
}
setTimeout(() => finish('duration'), config.durationMs ?? 300_000).unref();
process.stdin.on('end', () => finish('stdin closed'));
process.stdin.resume();
process.on('SIGTERM', () => finish('SIGTERM'));
