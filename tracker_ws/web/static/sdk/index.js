/**
 * tracker-ws client: the seed's `TrackerWebSocket` (design document §8) with the same methods
 * and `on…` callbacks, made to stay connected — jittered exponential backoff that never gives
 * up by default, recovery by `lastEventId`, `getState` after a reconnect that was not recovered,
 * a pong timeout, the token in the `bearer` subprotocol, and connection-state events.
 *
 * Works in browsers (the global `WebSocket`) and in Node >= 18 (pass a WebSocket class, e.g.
 * the `ws` package, as `options.WebSocket`; Node 22 has a global one).
 */
import { backoffDelay } from './backoff.js';
export { BACKOFF_DEFAULTS, backoffDelay } from './backoff.js';
/** Close codes of the service (docs/architecture.md §6), and the client's own. */
export const CLOSE_CODES = {
    NORMAL: 1000,
    ABNORMAL: 1006,
    POLICY: 1008,
    TOO_BIG: 1009,
    RESTART: 1012,
    /** Sent by this client when no pong came within `pongTimeoutMs`. */
    PONG_TIMEOUT: 4000,
    UNAUTHORIZED: 4001,
    TOKEN_EXPIRED: 4002,
    SLOW_CONSUMER: 4009,
    KICKED: 4010,
};
/** Closes after which retrying with the same token is pointless (a token problem). */
const TOKEN_CLOSES = new Set([
    CLOSE_CODES.UNAUTHORIZED,
    CLOSE_CODES.TOKEN_EXPIRED,
    CLOSE_CODES.KICKED,
]);
const OPEN = 1;
/** How many replayable eventIds are remembered to drop a frame delivered twice. */
const SEEN_EVENTS = 10000;
const REPLAYABLE = new Set(['geoEvent', 'notification', 'systemAlert']);
// ------------------------------------------------------------------------------------ client
export class TrackerWebSocket {
    constructor(token = null, options = {}) {
        this.ws = null;
        /** max(eventId) received: sent as `lastEventId` when reconnecting. */
        this.lastEventId = 0;
        /** What was subscribed, re-sent after every (re)connection (key: type + filter). */
        this.subscriptions = new Map();
        /** Retries since the last successful connection. */
        this.reconnectAttempts = 0;
        this.state = 'idle';
        /** The last `connected` frame. */
        this.connected = null;
        /** The close code and reason of the last connection that ended. */
        this.lastClose = null;
        /** Replayable frames dropped because their eventId had been delivered already. */
        this.duplicatesDropped = 0;
        this.stopped = true;
        this.generation = 0; // bumped for every socket: events of an older one are ignored
        this.opened = false; // the current socket opened
        this.tokenChecked = false; // this.token came from getToken for the next attempt
        this.retryTimer = null;
        this.pingTimer = null;
        this.pongTimer = null;
        this.connectTimer = null;
        this.seen = new Set();
        this.seenOrder = [];
        this.token = token;
        this.options = options;
        this.maxRetries = options.maxRetries ?? Infinity;
    }
    /** The seed's name for `maxRetries`. */
    get maxReconnectAttempts() {
        return this.maxRetries;
    }
    set maxReconnectAttempts(n) {
        this.maxRetries = n;
    }
    // ------------------------------------------------------------------------- public methods
    /** Connect (and keep reconnecting until `disconnect()`). No-op while connected. */
    connect() {
        if (!this.stopped)
            return;
        this.stopped = false;
        this.reconnectAttempts = 0;
        void this.open();
    }
    /** Close and stay closed (no reconnect) until `connect()` is called again. */
    disconnect(reason = 'Client disconnect') {
        const wasStopped = this.stopped;
        this.stopped = true;
        this.clearRetry();
        const ws = this.release();
        if (ws)
            safeClose(ws, CLOSE_CODES.NORMAL, reason);
        if (!wasStopped || this.state !== 'closed') {
            this.lastClose = { code: CLOSE_CODES.NORMAL, reason };
            this.setState({ state: 'closed', attempt: this.reconnectAttempts, code: 1000, reason });
        }
    }
    subscribe(subscriptionType, filter) {
        const message = { type: 'subscribe', subscriptionType, filter };
        this.subscriptions.set(`${subscriptionType}:${JSON.stringify(filter)}`, message);
        this.send(message);
    }
    /** `filter` null: the whole type (as the server does). */
    unsubscribe(subscriptionType, filter = null) {
        const message = { type: 'unsubscribe', subscriptionType, filter };
        if (filter === null) {
            for (const key of [...this.subscriptions.keys()]) {
                if (key.startsWith(`${subscriptionType}:`))
                    this.subscriptions.delete(key);
            }
        }
        else {
            this.subscriptions.delete(`${subscriptionType}:${JSON.stringify(filter)}`);
        }
        this.send(message);
    }
    subscribeVehicles(filter = { type: 'all' }) {
        this.subscribe('vehicles', filter);
    }
    subscribeGeoEvents(filter = { type: 'all' }) {
        this.subscribe('geoEvents', filter);
    }
    subscribeNotifications() {
        this.subscribe('notifications', { type: 'all' });
    }
    subscribeMaintenance(filter = { type: 'all' }) {
        this.subscribe('maintenance', filter);
    }
    subscribeSystemAlerts() {
        this.subscribe('systemAlerts', { type: 'all' });
    }
    unsubscribeVehicles(filter = null) {
        this.unsubscribe('vehicles', filter);
    }
    unsubscribeGeoEvents(filter = null) {
        this.unsubscribe('geoEvents', filter);
    }
    unsubscribeNotifications() {
        this.unsubscribe('notifications', null);
    }
    unsubscribeMaintenance(filter = null) {
        this.unsubscribe('maintenance', filter);
    }
    unsubscribeSystemAlerts() {
        this.unsubscribe('systemAlerts', null);
    }
    /** Ask for the current positions (`null`: every vehicle the token may see). */
    getState(vehicleIds = null) {
        this.send({ type: 'getState', vehicleIds });
    }
    /** Record an acknowledged position (informational, README). */
    ack(eventId) {
        this.send({ type: 'ack', eventId });
    }
    /** Send a frame if the socket is open (dropped otherwise, as in the seed). */
    send(message) {
        const ws = this.ws;
        if (ws && this.opened && ws.readyState === OPEN) {
            ws.send(JSON.stringify(message));
            return true;
        }
        return false;
    }
    /** One server frame (the seed's method: tests and pages may wrap it). */
    handleMessage(message) {
        const eventId = typeof message.eventId === 'number' ? message.eventId : 0;
        if (eventId > 0 && REPLAYABLE.has(message.type)) {
            if (this.seen.has(eventId)) {
                this.duplicatesDropped++;
                return;
            }
            this.remember(eventId);
        }
        if (eventId > this.lastEventId)
            this.lastEventId = eventId;
        this.onMessage?.(message);
        switch (message.type) {
            case 'connected':
                this.onConnectedFrame(message);
                break;
            case 'subscribed':
                this.onSubscribed?.(String(message.subscriptionType), Number(message.count), message);
                break;
            case 'position':
                this.onPositionUpdate?.(message.vehicleId, message.position);
                break;
            case 'positionBatch':
                for (const p of message.positions) {
                    this.onPositionUpdate?.(p.vehicleId, p.position, p.status, p.sensors, p.vehicleName);
                }
                break;
            case 'geoEvent':
                this.onGeoEvent?.(message.event, message);
                break;
            case 'notification':
                this.onNotification?.(message.notification, message);
                break;
            case 'systemAlert':
                this.onSystemAlert?.(String(message.level), String(message.message), message);
                break;
            case 'pong':
                this.clearPong();
                break;
            case 'error':
                if (this.onError)
                    this.onError(String(message.code), String(message.message), message);
                else
                    this.logger()?.warn('tracker-ws: server error', message.code, message.message);
                break;
            default:
                break;
        }
    }
    // ---------------------------------------------------------------------------- connection
    async open() {
        const gen = ++this.generation;
        this.opened = false;
        this.setState({ state: 'connecting', attempt: this.reconnectAttempts });
        const getToken = this.options.getToken;
        if (getToken && !this.tokenChecked) {
            try {
                this.token = (await getToken()) ?? this.token;
            }
            catch (err) {
                this.logger()?.warn('tracker-ws: getToken failed', err);
            }
            if (gen !== this.generation || this.stopped)
                return;
        }
        this.tokenChecked = false;
        let ws;
        try {
            const url = this.url();
            const Impl = this.options.WebSocket ?? globalWebSocket();
            ws =
                this.options.tokenInQuery || !this.token
                    ? new Impl(url)
                    : new Impl(url, ['bearer', this.token]);
        }
        catch (err) {
            // A bad URL or no WebSocket class: retrying cannot help.
            this.stopped = true;
            this.lastClose = { code: CLOSE_CODES.ABNORMAL, reason: String(err) };
            this.setState({ state: 'closed', attempt: this.reconnectAttempts, ...this.lastClose });
            this.logger()?.warn('tracker-ws: cannot connect', err);
            return;
        }
        this.ws = ws;
        this.connectTimer = setTimeout(() => {
            this.connectTimer = null;
            if (gen !== this.generation || this.stopped || this.opened)
                return;
            const stuck = this.release();
            const reason = 'connect timeout';
            if (stuck)
                safeClose(stuck, CLOSE_CODES.NORMAL, reason);
            this.lastClose = { code: CLOSE_CODES.ABNORMAL, reason };
            this.scheduleRetry(CLOSE_CODES.ABNORMAL, reason);
        }, this.options.connectTimeoutMs ?? 10000);
        ws.onopen = () => {
            if (gen !== this.generation)
                return;
            this.opened = true;
            this.clearConnectTimer();
            this.startHeartbeat();
        };
        ws.onmessage = (event) => {
            if (gen !== this.generation)
                return;
            let message;
            try {
                message = JSON.parse(typeof event.data === 'string' ? event.data : String(event.data));
            }
            catch {
                this.logger()?.warn('tracker-ws: a frame that is not JSON');
                return;
            }
            this.handleMessage(message);
        };
        ws.onclose = (event) => {
            if (gen !== this.generation)
                return;
            void this.dropped(event.code ?? CLOSE_CODES.ABNORMAL, event.reason ?? '');
        };
        ws.onerror = () => {
            // A close event follows.
        };
    }
    url() {
        let base = this.options.url;
        if (!base) {
            const loc = globalThis.location;
            if (!loc)
                throw new Error('tracker-ws: options.url is required outside a browser');
            base = `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}/ws`;
        }
        const url = new URL(base);
        for (const [k, v] of Object.entries(this.options.params ?? {}))
            url.searchParams.set(k, v);
        if (this.lastEventId > 0)
            url.searchParams.set('lastEventId', String(this.lastEventId));
        if (this.token && this.options.tokenInQuery) {
            url.searchParams.set('token', this.token);
        }
        return url.toString();
    }
    onConnectedFrame(message) {
        const info = {
            connectionId: String(message.connectionId),
            recovered: message.recovered === true,
            reason: typeof message.reason === 'string' ? message.reason : null,
            restoredSubscriptions: Number(message.restoredSubscriptions ?? 0),
            serverTime: typeof message.serverTime === 'string' ? message.serverTime : null,
        };
        this.connected = info;
        const attempt = this.reconnectAttempts;
        this.reconnectAttempts = 0;
        // Re-send what is subscribed: a recovered server ignores what it restored already (nothing
        // twice), and a subscribe made while disconnected reaches it.
        this.restoreSubscriptions();
        if (!info.recovered) {
            const vehicles = this.vehiclesToRefresh();
            if (vehicles !== undefined)
                this.getState(vehicles);
        }
        this.setState({ state: 'open', attempt, connected: info });
        this.onConnected?.(info);
    }
    /** The seed's method: every subscription, again. */
    restoreSubscriptions() {
        this.subscriptions.forEach((message) => this.send(message));
    }
    /** The ids for getState after an unrecovered connection; null = all; undefined = none. */
    vehiclesToRefresh() {
        const ids = new Set();
        let any = false;
        for (const m of this.subscriptions.values()) {
            if (m.subscriptionType !== 'vehicles')
                continue;
            any = true;
            const f = m.filter;
            if (f.type !== 'byIds')
                return null;
            f.ids.forEach((id) => ids.add(id));
        }
        return any ? [...ids] : undefined;
    }
    async dropped(code, reason) {
        const wasOpen = this.opened;
        this.release();
        // Anything that happens meanwhile (disconnect, connect) bumps the generation.
        const gen = this.generation;
        if (this.stopped)
            return;
        if (!wasOpen && code === CLOSE_CODES.ABNORMAL) {
            // The handshake failed: ask the server why (a refused token is final).
            [code, reason] = await this.diagnose(code, reason);
            if (gen !== this.generation || this.stopped)
                return;
        }
        this.lastClose = { code, reason };
        if (TOKEN_CLOSES.has(code)) {
            await this.refreshToken(gen, code, reason);
            return;
        }
        this.scheduleRetry(code, reason);
    }
    async refreshToken(gen, code, reason) {
        const getToken = this.options.getToken;
        let fresh = null;
        if (getToken) {
            try {
                fresh = await getToken();
            }
            catch (err) {
                this.logger()?.warn('tracker-ws: getToken failed', err);
            }
            if (gen !== this.generation || this.stopped)
                return;
        }
        if (!fresh || fresh === this.token) {
            this.stopped = true;
            this.setState({ state: 'closed', attempt: this.reconnectAttempts, code, reason });
            return;
        }
        this.token = fresh;
        this.tokenChecked = true;
        this.scheduleRetry(code, reason, 0);
    }
    scheduleRetry(code, reason, delay) {
        const attempt = this.reconnectAttempts;
        if (attempt >= this.maxRetries) {
            this.stopped = true;
            this.setState({ state: 'closed', attempt, code, reason });
            this.onMaxReconnectReached?.();
            return;
        }
        const delayMs = delay ?? backoffDelay(attempt, this.options, this.options.random);
        this.reconnectAttempts = attempt + 1;
        this.setState({ state: 'reconnecting', attempt: attempt + 1, code, reason, delayMs });
        this.clearRetry();
        this.retryTimer = setTimeout(() => {
            this.retryTimer = null;
            if (!this.stopped)
                void this.open();
        }, delayMs);
    }
    async diagnose(code, reason) {
        const doFetch = globalThis.fetch;
        if (this.options.diagnoseHandshake === false || !doFetch)
            return [code, reason];
        const url = new URL(this.url());
        url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:';
        try {
            const headers = this.token
                ? { Authorization: `Bearer ${this.token}` }
                : {};
            // Bounded: a server that never answers must not hold up the next retry.
            const timeout = AbortSignal.timeout;
            const signal = typeof timeout === 'function' ? timeout(5000) : undefined;
            const res = await doFetch(url.toString(), { headers, signal });
            let body = {};
            try {
                body = (await res.json());
            }
            catch {
                // not JSON
            }
            const text = body.message ?? res.statusText;
            if (res.status === 401 || res.status === 403) {
                const closeCode = body.code === 'TOKEN_EXPIRED' ? CLOSE_CODES.TOKEN_EXPIRED : CLOSE_CODES.UNAUTHORIZED;
                return [closeCode, `${body.code ?? res.status}: ${text}`];
            }
            return [code, `handshake refused (HTTP ${res.status}${text ? `: ${text}` : ''})`];
        }
        catch {
            return [code, reason || 'server unreachable'];
        }
    }
    // ----------------------------------------------------------------------------- heartbeat
    startHeartbeat() {
        this.stopHeartbeat();
        const every = this.options.pingIntervalMs ?? 25000;
        this.pingTimer = setInterval(() => this.ping(), every);
    }
    ping() {
        if (!this.send({ type: 'ping' }))
            return;
        if (this.pongTimer !== null)
            return; // still waiting for the previous one
        const gen = this.generation;
        this.pongTimer = setTimeout(() => {
            this.pongTimer = null;
            if (gen !== this.generation || this.stopped)
                return;
            // A dead link may take minutes to report a close: drop it now and reconnect.
            const ws = this.release();
            const reason = 'pong timeout';
            if (ws)
                safeClose(ws, CLOSE_CODES.PONG_TIMEOUT, reason);
            this.lastClose = { code: CLOSE_CODES.PONG_TIMEOUT, reason };
            this.scheduleRetry(CLOSE_CODES.PONG_TIMEOUT, reason);
        }, this.options.pongTimeoutMs ?? 10000);
    }
    clearPong() {
        if (this.pongTimer !== null) {
            clearTimeout(this.pongTimer);
            this.pongTimer = null;
        }
    }
    stopHeartbeat() {
        if (this.pingTimer !== null) {
            clearInterval(this.pingTimer);
            this.pingTimer = null;
        }
        this.clearPong();
    }
    // ------------------------------------------------------------------------------- helpers
    /** Forget the current socket (its later events are ignored); returns it. */
    release() {
        this.generation++;
        this.stopHeartbeat();
        this.clearConnectTimer();
        const ws = this.ws;
        this.ws = null;
        this.opened = false;
        if (ws) {
            ws.onopen = null;
            ws.onmessage = null;
            ws.onclose = null;
            ws.onerror = () => { }; // ws (Node) throws on an unhandled error event
        }
        return ws;
    }
    clearConnectTimer() {
        if (this.connectTimer !== null) {
            clearTimeout(this.connectTimer);
            this.connectTimer = null;
        }
    }
    clearRetry() {
        if (this.retryTimer !== null) {
            clearTimeout(this.retryTimer);
            this.retryTimer = null;
        }
    }
    remember(eventId) {
        this.seen.add(eventId);
        this.seenOrder.push(eventId);
        if (this.seenOrder.length > SEEN_EVENTS) {
            this.seen.delete(this.seenOrder.shift());
        }
    }
    setState(change) {
        this.state = change.state;
        this.onStateChange?.(change);
    }
    logger() {
        return this.options.logger === undefined ? console : this.options.logger;
    }
}
function safeClose(ws, code, reason) {
    try {
        ws.close(code, reason);
    }
    catch {
        // already closing, or a code this implementation refuses
    }
}
function globalWebSocket() {
    const impl = globalThis.WebSocket;
    if (!impl) {
        throw new Error('tracker-ws: no global WebSocket; pass options.WebSocket (e.g. the `ws` package in Node)');
    }
    return impl;
}
export default TrackerWebSocket;
