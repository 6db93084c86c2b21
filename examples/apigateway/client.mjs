// The seed's browser client (docs 004, "Client Implementation"): the WebSocketClient class
// below is copied unchanged; its usage example follows with the URL and the token changed.
// Lines marked "demo" only report what happens, so examples/apigateway/run can check it.
//
// Node 20 has no global WebSocket (a browser has): the ws package stands in for it.
import WebSocket from "ws";
globalThis.WebSocket = WebSocket;

// ---- the seed's class, unchanged ----
class WebSocketClient {
  constructor(url, token) {
    this.url = `${url}?token=${token}`;
    this.callbacks = {};
    this.socket = null;
    this.reconnectAttempts = 0;
    this.maxReconnectAttempts = 5;
    this.reconnectInterval = 1000;
  }

  connect() {
    this.socket = new WebSocket(this.url);
    
    this.socket.onopen = (event) => {
      console.log('WebSocket connection established');
      this.reconnectAttempts = 0;
      if (this.callbacks.onConnect) {
        this.callbacks.onConnect(event);
      }
    };
    
    this.socket.onclose = (event) => {
      console.log('WebSocket connection closed');
      if (this.callbacks.onDisconnect) {
        this.callbacks.onDisconnect(event);
      }
      
      // Attempt to reconnect
      if (this.reconnectAttempts < this.maxReconnectAttempts) {
        setTimeout(() => {
          this.reconnectAttempts++;
          this.connect();
        }, this.reconnectInterval * this.reconnectAttempts);
      }
    };
    
    this.socket.onerror = (error) => {
      console.error('WebSocket error:', error);
      if (this.callbacks.onError) {
        this.callbacks.onError(error);
      }
    };
    
    this.socket.onmessage = (event) => {
      try {
        const message = JSON.parse(event.data);
        if (this.callbacks.onMessage) {
          this.callbacks.onMessage(message);
        }
        
        // Route to specific message handler if available
        if (message.type && this.callbacks[`on${message.type}`]) {
          this.callbacks[`on${message.type}`](message);
        }
      } catch (error) {
        console.error('Error parsing message:', error);
      }
    };
  }
  
  send(action, data) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      const message = {
        action,
        data
      };
      this.socket.send(JSON.stringify(message));
      return true;
    }
    return false;
  }
  
  subscribe(topic) {
    return this.send('subscribeToDeals', { topic });
  }
  
  disconnect() {
    if (this.socket) {
      this.socket.close();
      this.socket = null;
    }
  }
  
  on(event, callback) {
    this.callbacks[event] = callback;
  }
}

// ---- the seed's usage example; URL and token changed ----
// Before: new WebSocketClient('wss://api-id.execute-api.region.amazonaws.com/prod', token)
// After:  the Signalbox address with the path /ws (the class appends ?token=…).
const token = process.env.TOKEN; // was 'your-jwt-token'; run mints one with `signalbox token`
const wsClient = new WebSocketClient(process.env.GATEWAY_WS_URL, token);

wsClient.on('onConnect', () => {
  console.log('Connected!');
  // 'new-deals' is a valid Signalbox topic as it is (SPEC §1: a bare name with no ':' is its
  // own namespace, and '-' is a topic character), so the seed's call stays unchanged; the
  // namespace is opened to signed-in users in signalbox.toml ([namespaces.new-deals]).
  wsClient.subscribe('new-deals');
});

wsClient.on('onDealUpdate', (message) => {
  console.log('New deal update:', message.data);
  // Update UI with new deal information
});

wsClient.connect();


// ---- demo: report each frame, send the seed's two routed messages once subscribed, and end
// when everything expected arrived. The seed's own handlers above stay in place: `on()` keeps
// one callback per name, so the demo uses names the seed does not (onMessage, on<type>).
const expected = new Set(['subscribed', 'messageSent', 'ackConfirmed', 'chatMessage', 'DealUpdate']); // demo
wsClient.on('onMessage', (message) => { // demo
  console.log('demo: frame', JSON.stringify(message)); // demo
  if (!expected.delete(message.type) || expected.size > 0) return; // demo
  console.log('demo: every expected message arrived'); // demo
  wsClient.maxReconnectAttempts = 0; // demo: the seed's disconnect() would otherwise reconnect
  setTimeout(() => wsClient.disconnect(), 100); // demo
  setTimeout(() => process.exit(0), 600); // demo
}); // demo
wsClient.on('onconnected', (message) => console.log('demo: connected as', message.connectionId, 'user', message.userId)); // demo
wsClient.on('onsubscribed', (message) => { // demo
  console.log('demo: subscribed to', message.topic); // demo
  // The seed's sendMessage and notificationAck requests (docs 004, "Available Routes"), at
  // once: the handler answers through node B, which reaches a connection of node A from
  // the moment it opens. SEND_DELAY_MS delays them, to watch the flow more slowly.
  setTimeout(() => { // demo
    wsClient.send('sendMessage', { recipientId: 'alice', content: 'Hello, how are you?', type: 'text' }); // demo
    wsClient.send('notificationAck', { notificationId: 'notification-42' }); // demo
  }, Number(process.env.SEND_DELAY_MS ?? 0)); // demo
}); // demo
wsClient.on('onmessageSent', (message) => console.log('demo: messageSent', JSON.stringify(message.data))); // demo
wsClient.on('onackConfirmed', (message) => console.log('demo: ackConfirmed', JSON.stringify(message.data))); // demo
wsClient.on('onchatMessage', (message) => console.log('demo: chatMessage on', message.topic, JSON.stringify(message.data))); // demo
wsClient.on('onerror', (message) => console.log('demo: error frame', JSON.stringify(message))); // demo
wsClient.on('onDisconnect', (event) => console.log('demo: closed', event.code)); // demo
setTimeout(() => { // demo
  console.log('demo: timed out; missing:', [...expected].join(', ')); // demo
  process.exit(1); // demo
}, Number(process.env.CLIENT_TIMEOUT_MS || 40000)); // demo
