// The seed's JavaScript client (websocket-service-spec.ru.md §8), copied verbatim; the only
// change is the URL, built from `location` (same host as the page) instead of
// wss://tracker.example.com/ws. Used by the demo page (index.html) and by the e2e tests:
// tests/e2e/seed_client.js evaluates this file in Node, providing `WebSocket` and `location`.
// Keep it a plain browser script that declares the class and nothing else.
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
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws?token=${this.token}&lastEventId=${this.lastEventId}`;
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
