/**
 * tracker-ws client: the seed's `TrackerWebSocket` (design document §8) with the same methods
 * and `on…` callbacks, made to stay connected — jittered exponential backoff that never gives
 * up by default, recovery by `lastEventId`, `getState` after a reconnect that was not recovered,
 * a pong timeout, the token in the `bearer` subprotocol, and connection-state events.
 *
 * Works in browsers (the global `WebSocket`) and in Node >= 18 (pass a WebSocket class, e.g.
 * the `ws` package, as `options.WebSocket`; Node 22 has a global one).
 */

import { backoffDelay, type BackoffOptions } from './backoff.js';

export { BACKOFF_DEFAULTS, backoffDelay, type BackoffOptions } from './backoff.js';

// ------------------------------------------------------------------------------- the protocol

export type SubscriptionType =
  | 'vehicles'
  | 'geoEvents'
  | 'notifications'
  | 'maintenance'
  | 'systemAlerts';

export type SubscriptionFilter =
  | { type: 'all' }
  | { type: 'byIds'; ids: string[] }
  | { type: 'byGroup'; groupId: string }
  | { type: 'byGeozone'; geozoneId: string };

export type VehicleStatus = 'moving' | 'stopped' | 'parking' | 'offline' | 'noGps';

export interface Position {
  lat: number;
  lon: number;
  speed: number;
  course: number;
  altitude?: number | null;
  satellites?: number | null;
  timestamp: string;
}

export interface SensorData {
  fuel?: number | null;
  temperature?: number | null;
  ignition?: boolean | null;
  doors?: boolean | null;
}

export interface GeozoneEvent {
  vehicleId: string;
  vehicleName: string;
  geozoneId: string;
  geozoneName: string;
  eventType: 'entered' | 'exited';
  position: Position;
  timestamp: string;
}

export interface NotificationPayload {
  id: string;
  title: string;
  body: string;
  category: string;
  priority: string;
  data: Record<string, unknown>;
}

/** Any frame the server sends: `type`, `eventId`, `timestamp` and the fields of its type. */
export interface ServerMessage {
  type: string;
  eventId?: number;
  timestamp?: string;
  [field: string]: unknown;
}

/** What the `connected` frame says (README "Reconnecting without losing anything"). */
export interface ConnectedInfo {
  connectionId: string;
  /** The server restored the subscriptions and replayed every missed event. */
  recovered: boolean;
  /** Why not, when `recovered` is false: expired, trimmed, no_state, permissions_changed, … */
  reason: string | null;
  restoredSubscriptions: number;
  serverTime: string | null;
}

export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

/** One connection-state change, given to `onStateChange`. */
export interface StateChange {
  state: ConnectionState;
  /** connecting: the number of this attempt (0 = first connection); reconnecting: of the next. */
  attempt: number;
  /** reconnecting / closed: the close code of the connection that ended (see CLOSE_CODES). */
  code?: number;
  /** reconnecting / closed: the close reason (or what the handshake's HTTP answer said). */
  reason?: string;
  /** reconnecting: milliseconds until the next attempt. */
  delayMs?: number;
  /** open: the `connected` frame. */
  connected?: ConnectedInfo;
}

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
} as const;

/** Closes after which retrying with the same token is pointless (a token problem). */
const TOKEN_CLOSES: ReadonlySet<number> = new Set([
  CLOSE_CODES.UNAUTHORIZED,
  CLOSE_CODES.TOKEN_EXPIRED,
  CLOSE_CODES.KICKED,
]);

// ------------------------------------------------------------------------------ the transport

/** The part of the WHATWG WebSocket this client uses (browsers' and the `ws` package's). */
export interface WebSocketLike {
  readonly readyState: number;
  // Event parameters are `any`: the browser's and ws's event classes differ.
  /* eslint-disable @typescript-eslint/no-explicit-any */
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  /* eslint-enable @typescript-eslint/no-explicit-any */
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (
  url: string,
  protocols?: string | string[],
) => WebSocketLike;

const OPEN = 1;

export interface Logger {
  warn(...args: unknown[]): void;
}

export interface TrackerOptions extends BackoffOptions {
  /** `ws[s]://host:port/ws`. Default: the page's host (`location`), `/ws`. */
  url?: string;
  /** A WebSocket class. Default: the global `WebSocket` (browsers, Node >= 22). */
  WebSocket?: WebSocketConstructor;
  /**
   * Gives the token for each connection attempt (may return a cached one). After the server
   * refused or closed for a token problem (4001, 4002, 4010) the client reconnects only if
   * this returns a different token; without it such a close is final.
   */
  getToken?: () => string | null | Promise<string | null>;
  /** Retries after a drop before giving up (`onMaxReconnectReached`). Default: Infinity. */
  maxRetries?: number;
  /** A `ping` every this many ms while open. Default 25 000 (the server closes after 75 s). */
  pingIntervalMs?: number;
  /** Reconnect when no `pong` came this long after a ping. Default 10 000. */
  pongTimeoutMs?: number;
  /**
   * Give up on an attempt whose socket has not opened this long after it was started (a server
   * that accepts the TCP connection but never answers the handshake) and retry. Default 10 000.
   */
  connectTimeoutMs?: number;
  /** Send the token as `?token=` instead of the `bearer` subprotocol (not recommended). */
  tokenInQuery?: boolean;
  /** Extra query parameters, e.g. `{ device: 'phone' }` (separate recovery state per device). */
  params?: Record<string, string>;
  /**
   * When a handshake fails (a browser only sees close code 1006), ask the same URL over HTTP
   * with `fetch` for the reason: a refused token becomes close 4001/4002 with the server's
   * message, and is not retried. Default: true where `fetch` exists.
   */
  diagnoseHandshake?: boolean;
  /** Random source in [0, 1) for the jitter (tests). Default Math.random. */
  random?: () => number;
  /** Where warnings go (server errors without an `onError`). Default: console. */
  logger?: Logger | null;
}

/** How many replayable eventIds are remembered to drop a frame delivered twice. */
const SEEN_EVENTS = 10_000;
const REPLAYABLE: ReadonlySet<string> = new Set(['geoEvent', 'notification', 'systemAlert']);

// ------------------------------------------------------------------------------------ client

export class TrackerWebSocket {
  token: string | null;
  ws: WebSocketLike | null = null;
  /** max(eventId) received: sent as `lastEventId` when reconnecting. */
  lastEventId = 0;
  /** What was subscribed, re-sent after every (re)connection (key: type + filter). */
  subscriptions = new Map<string, ServerMessage>();
  /** Retries since the last successful connection. */
  reconnectAttempts = 0;
  state: ConnectionState = 'idle';
  /** The last `connected` frame. */
  connected: ConnectedInfo | null = null;
  /** The close code and reason of the last connection that ended. */
  lastClose: { code: number; reason: string } | null = null;
  /** Replayable frames dropped because their eventId had been delivered already. */
  duplicatesDropped = 0;

  // The seed's callbacks (same arguments first), and new ones.
  onPositionUpdate?: (
    vehicleId: string,
    position: Position,
    status?: VehicleStatus,
    sensors?: SensorData,
    vehicleName?: string,
  ) => void;
  onGeoEvent?: (event: GeozoneEvent, message: ServerMessage) => void;
  onNotification?: (notification: NotificationPayload, message: ServerMessage) => void;
  onSystemAlert?: (level: string, text: string, message: ServerMessage) => void;
  onMaxReconnectReached?: () => void;
  onConnected?: (info: ConnectedInfo) => void;
  onSubscribed?: (subscriptionType: string, count: number, message: ServerMessage) => void;
  onError?: (code: string, text: string, message: ServerMessage) => void;
  onStateChange?: (change: StateChange) => void;
  /** Every frame, before the typed callbacks. */
  onMessage?: (message: ServerMessage) => void;

  private readonly options: TrackerOptions;
  private maxRetries: number;
  private stopped = true;
  private generation = 0; // bumped for every socket: events of an older one are ignored
  private opened = false; // the current socket opened
  private tokenChecked = false; // this.token came from getToken for the next attempt
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  private pongTimer: ReturnType<typeof setTimeout> | null = null;
  private connectTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly seen = new Set<number>();
  private readonly seenOrder: number[] = [];

  constructor(token: string | null = null, options: TrackerOptions = {}) {
    this.token = token;
    this.options = options;
    this.maxRetries = options.maxRetries ?? Infinity;
  }

  /** The seed's name for `maxRetries`. */
  get maxReconnectAttempts(): number {
    return this.maxRetries;
  }

  set maxReconnectAttempts(n: number) {
    this.maxRetries = n;
  }

  // ------------------------------------------------------------------------- public methods

  /** Connect (and keep reconnecting until `disconnect()`). No-op while connected. */
  connect(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.reconnectAttempts = 0;
    void this.open();
  }

  /** Close and stay closed (no reconnect) until `connect()` is called again. */
  disconnect(reason = 'Client disconnect'): void {
    const wasStopped = this.stopped;
    this.stopped = true;
    this.clearRetry();
    const ws = this.release();
    if (ws) safeClose(ws, CLOSE_CODES.NORMAL, reason);
    if (!wasStopped || this.state !== 'closed') {
      this.lastClose = { code: CLOSE_CODES.NORMAL, reason };
      this.setState({ state: 'closed', attempt: this.reconnectAttempts, code: 1000, reason });
    }
  }

  subscribe(subscriptionType: SubscriptionType | string, filter: SubscriptionFilter): void {
    const message = { type: 'subscribe', subscriptionType, filter };
    this.subscriptions.set(`${subscriptionType}:${JSON.stringify(filter)}`, message);
    this.send(message);
  }

  /** `filter` null: the whole type (as the server does). */
  unsubscribe(
    subscriptionType: SubscriptionType | string,
    filter: SubscriptionFilter | null = null,
  ): void {
    const message = { type: 'unsubscribe', subscriptionType, filter };
    if (filter === null) {
      for (const key of [...this.subscriptions.keys()]) {
        if (key.startsWith(`${subscriptionType}:`)) this.subscriptions.delete(key);
      }
    } else {
      this.subscriptions.delete(`${subscriptionType}:${JSON.stringify(filter)}`);
    }
    this.send(message);
  }

  subscribeVehicles(filter: SubscriptionFilter = { type: 'all' }): void {
    this.subscribe('vehicles', filter);
  }

  subscribeGeoEvents(filter: SubscriptionFilter = { type: 'all' }): void {
    this.subscribe('geoEvents', filter);
  }

  subscribeNotifications(): void {
    this.subscribe('notifications', { type: 'all' });
  }

  subscribeMaintenance(filter: SubscriptionFilter = { type: 'all' }): void {
    this.subscribe('maintenance', filter);
  }

  subscribeSystemAlerts(): void {
    this.subscribe('systemAlerts', { type: 'all' });
  }

  unsubscribeVehicles(filter: SubscriptionFilter | null = null): void {
    this.unsubscribe('vehicles', filter);
  }

  unsubscribeGeoEvents(filter: SubscriptionFilter | null = null): void {
    this.unsubscribe('geoEvents', filter);
  }

  unsubscribeNotifications(): void {
    this.unsubscribe('notifications', null);
  }

  unsubscribeMaintenance(filter: SubscriptionFilter | null = null): void {
    this.unsubscribe('maintenance', filter);
  }

  unsubscribeSystemAlerts(): void {
    this.unsubscribe('systemAlerts', null);
  }

  /** Ask for the current positions (`null`: every vehicle the token may see). */
  getState(vehicleIds: string[] | null = null): void {
    this.send({ type: 'getState', vehicleIds });
  }

  /** Record an acknowledged position (informational, README). */
  ack(eventId: number): void {
    this.send({ type: 'ack', eventId });
  }

  /** Send a frame if the socket is open (dropped otherwise, as in the seed). */
  send(message: object): boolean {
    const ws = this.ws;
    if (ws && this.opened && ws.readyState === OPEN) {
      ws.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  /** One server frame (the seed's method: tests and pages may wrap it). */
  handleMessage(message: ServerMessage): void {
    const eventId = typeof message.eventId === 'number' ? message.eventId : 0;
    if (eventId > 0 && REPLAYABLE.has(message.type)) {
      if (this.seen.has(eventId)) {
        this.duplicatesDropped++;
        return;
      }
      this.remember(eventId);
    }
    if (eventId > this.lastEventId) this.lastEventId = eventId;
    this.onMessage?.(message);

    switch (message.type) {
      case 'connected':
        this.onConnectedFrame(message);
        break;
      case 'subscribed':
        this.onSubscribed?.(String(message.subscriptionType), Number(message.count), message);
        break;
      case 'position':
        this.onPositionUpdate?.(message.vehicleId as string, message.position as Position);
        break;
      case 'positionBatch':
        for (const p of message.positions as Array<Record<string, unknown>>) {
          this.onPositionUpdate?.(
            p.vehicleId as string,
            p.position as Position,
            p.status as VehicleStatus | undefined,
            p.sensors as SensorData | undefined,
            p.vehicleName as string | undefined,
          );
        }
        break;
      case 'geoEvent':
        this.onGeoEvent?.(message.event as GeozoneEvent, message);
        break;
      case 'notification':
        this.onNotification?.(message.notification as NotificationPayload, message);
        break;
      case 'systemAlert':
        this.onSystemAlert?.(String(message.level), String(message.message), message);
        break;
      case 'pong':
        this.clearPong();
        break;
      case 'error':
        if (this.onError) this.onError(String(message.code), String(message.message), message);
        else this.logger()?.warn('tracker-ws: server error', message.code, message.message);
        break;
      default:
        break;
    }
  }

  // ---------------------------------------------------------------------------- connection

  private async open(): Promise<void> {
    const gen = ++this.generation;
    this.opened = false;
    this.setState({ state: 'connecting', attempt: this.reconnectAttempts });
    const getToken = this.options.getToken;
    if (getToken && !this.tokenChecked) {
      try {
        this.token = (await getToken()) ?? this.token;
      } catch (err) {
        this.logger()?.warn('tracker-ws: getToken failed', err);
      }
      if (gen !== this.generation || this.stopped) return;
    }
    this.tokenChecked = false;
    let ws: WebSocketLike;
    try {
      const url = this.url();
      const Impl = this.options.WebSocket ?? globalWebSocket();
      ws =
        this.options.tokenInQuery || !this.token
          ? new Impl(url)
          : new Impl(url, ['bearer', this.token]);
    } catch (err) {
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
      if (gen !== this.generation || this.stopped || this.opened) return;
      const stuck = this.release();
      const reason = 'connect timeout';
      if (stuck) safeClose(stuck, CLOSE_CODES.NORMAL, reason);
      this.lastClose = { code: CLOSE_CODES.ABNORMAL, reason };
      this.scheduleRetry(CLOSE_CODES.ABNORMAL, reason);
    }, this.options.connectTimeoutMs ?? 10_000);
    ws.onopen = () => {
      if (gen !== this.generation) return;
      this.opened = true;
      this.clearConnectTimer();
      this.startHeartbeat();
    };
    ws.onmessage = (event: { data: unknown }) => {
      if (gen !== this.generation) return;
      let message: ServerMessage;
      try {
        message = JSON.parse(typeof event.data === 'string' ? event.data : String(event.data));
      } catch {
        this.logger()?.warn('tracker-ws: a frame that is not JSON');
        return;
      }
      this.handleMessage(message);
    };
    ws.onclose = (event: { code?: number; reason?: string }) => {
      if (gen !== this.generation) return;
      void this.dropped(event.code ?? CLOSE_CODES.ABNORMAL, event.reason ?? '');
    };
    ws.onerror = () => {
      // A close event follows.
    };
  }

  private url(): string {
    let base = this.options.url;
    if (!base) {
      const loc = (globalThis as { location?: { protocol: string; host: string } }).location;
      if (!loc) throw new Error('tracker-ws: options.url is required outside a browser');
      base = `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}/ws`;
    }
    const url = new URL(base);
    for (const [k, v] of Object.entries(this.options.params ?? {})) url.searchParams.set(k, v);
    if (this.lastEventId > 0) url.searchParams.set('lastEventId', String(this.lastEventId));
    if (this.token && this.options.tokenInQuery) {
      url.searchParams.set('token', this.token);
    }
    return url.toString();
  }

  private onConnectedFrame(message: ServerMessage): void {
    const info: ConnectedInfo = {
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
      if (vehicles !== undefined) this.getState(vehicles);
    }
    this.setState({ state: 'open', attempt, connected: info });
    this.onConnected?.(info);
  }

  /** The seed's method: every subscription, again. */
  restoreSubscriptions(): void {
    this.subscriptions.forEach((message) => this.send(message));
  }

  /** The ids for getState after an unrecovered connection; null = all; undefined = none. */
  private vehiclesToRefresh(): string[] | null | undefined {
    const ids = new Set<string>();
    let any = false;
    for (const m of this.subscriptions.values()) {
      if (m.subscriptionType !== 'vehicles') continue;
      any = true;
      const f = m.filter as SubscriptionFilter;
      if (f.type !== 'byIds') return null;
      f.ids.forEach((id) => ids.add(id));
    }
    return any ? [...ids] : undefined;
  }

  private async dropped(code: number, reason: string): Promise<void> {
    const wasOpen = this.opened;
    this.release();
    // Anything that happens meanwhile (disconnect, connect) bumps the generation.
    const gen = this.generation;
    if (this.stopped) return;
    if (!wasOpen && code === CLOSE_CODES.ABNORMAL) {
      // The handshake failed: ask the server why (a refused token is final).
      [code, reason] = await this.diagnose(code, reason);
      if (gen !== this.generation || this.stopped) return;
    }
    this.lastClose = { code, reason };
    if (TOKEN_CLOSES.has(code)) {
      await this.refreshToken(gen, code, reason);
      return;
    }
    this.scheduleRetry(code, reason);
  }

  private async refreshToken(gen: number, code: number, reason: string): Promise<void> {
    const getToken = this.options.getToken;
    let fresh: string | null = null;
    if (getToken) {
      try {
        fresh = await getToken();
      } catch (err) {
        this.logger()?.warn('tracker-ws: getToken failed', err);
      }
      if (gen !== this.generation || this.stopped) return;
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

  private scheduleRetry(code: number, reason: string, delay?: number): void {
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
      if (!this.stopped) void this.open();
    }, delayMs);
  }

  private async diagnose(code: number, reason: string): Promise<[number, string]> {
    const doFetch = (globalThis as { fetch?: typeof fetch }).fetch;
    if (this.options.diagnoseHandshake === false || !doFetch) return [code, reason];
    const url = new URL(this.url());
    url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:';
    try {
      const headers: Record<string, string> = this.token
        ? { Authorization: `Bearer ${this.token}` }
        : {};
      // Bounded: a server that never answers must not hold up the next retry.
      const timeout = (AbortSignal as { timeout?: (ms: number) => AbortSignal }).timeout;
      const signal = typeof timeout === 'function' ? timeout(5_000) : undefined;
      const res = await doFetch(url.toString(), { headers, signal });
      let body: { code?: string; message?: string } = {};
      try {
        body = (await res.json()) as typeof body;
      } catch {
        // not JSON
      }
      const text = body.message ?? res.statusText;
      if (res.status === 401 || res.status === 403) {
        const closeCode =
          body.code === 'TOKEN_EXPIRED' ? CLOSE_CODES.TOKEN_EXPIRED : CLOSE_CODES.UNAUTHORIZED;
        return [closeCode, `${body.code ?? res.status}: ${text}`];
      }
      return [code, `handshake refused (HTTP ${res.status}${text ? `: ${text}` : ''})`];
    } catch {
      return [code, reason || 'server unreachable'];
    }
  }

  // ----------------------------------------------------------------------------- heartbeat

  private startHeartbeat(): void {
    this.stopHeartbeat();
    const every = this.options.pingIntervalMs ?? 25_000;
    this.pingTimer = setInterval(() => this.ping(), every);
  }

  private ping(): void {
    if (!this.send({ type: 'ping' })) return;
    if (this.pongTimer !== null) return; // still waiting for the previous one
    const gen = this.generation;
    this.pongTimer = setTimeout(() => {
      this.pongTimer = null;
      if (gen !== this.generation || this.stopped) return;
      // A dead link may take minutes to report a close: drop it now and reconnect.
      const ws = this.release();
      const reason = 'pong timeout';
      if (ws) safeClose(ws, CLOSE_CODES.PONG_TIMEOUT, reason);
      this.lastClose = { code: CLOSE_CODES.PONG_TIMEOUT, reason };
      this.scheduleRetry(CLOSE_CODES.PONG_TIMEOUT, reason);
    }, this.options.pongTimeoutMs ?? 10_000);
  }

  private clearPong(): void {
    if (this.pongTimer !== null) {
      clearTimeout(this.pongTimer);
      this.pongTimer = null;
    }
  }

  private stopHeartbeat(): void {
    if (this.pingTimer !== null) {
      clearInterval(this.pingTimer);
      this.pingTimer = null;
    }
    this.clearPong();
  }

  // ------------------------------------------------------------------------------- helpers

  /** Forget the current socket (its later events are ignored); returns it. */
  private release(): WebSocketLike | null {
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
      ws.onerror = () => {}; // ws (Node) throws on an unhandled error event
    }
    return ws;
  }

  private clearConnectTimer(): void {
    if (this.connectTimer !== null) {
      clearTimeout(this.connectTimer);
      this.connectTimer = null;
    }
  }

  private clearRetry(): void {
    if (this.retryTimer !== null) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
  }

  private remember(eventId: number): void {
    this.seen.add(eventId);
    this.seenOrder.push(eventId);
    if (this.seenOrder.length > SEEN_EVENTS) {
      this.seen.delete(this.seenOrder.shift() as number);
    }
  }

  private setState(change: StateChange): void {
    this.state = change.state;
    this.onStateChange?.(change);
  }

  private logger(): Logger | null {
    return this.options.logger === undefined ? console : this.options.logger;
  }
}

function safeClose(ws: WebSocketLike, code: number, reason: string): void {
  try {
    ws.close(code, reason);
  } catch {
    // already closing, or a code this implementation refuses
  }
}

function globalWebSocket(): WebSocketConstructor {
  const impl = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (!impl) {
    throw new Error(
      'tracker-ws: no global WebSocket; pass options.WebSocket (e.g. the `ws` package in Node)',
    );
  }
  return impl;
}

export default TrackerWebSocket;
