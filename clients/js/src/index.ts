/**
 * `@signalbox/client`: the Signalbox gateway's client for browsers and Node 18+.
 *
 * ```ts
 * const sb = new Signalbox({ url: "wss://rt.example.com/ws", token: () => fetchToken() });
 * const sub = sb.subscribe("job:42", (event) => render(event));
 * ```
 */
export { Signalbox } from "./client.js";
export type {
  RequestOptions,
  SignalboxEvents,
  SignalboxOptions,
  SubscribeOptions,
  WebSocketConstructor,
  WebSocketLike,
} from "./client.js";
export { Subscription } from "./subscription.js";
export type { SubscriptionEvents } from "./subscription.js";
export { SignalboxError, ClientErrorCode } from "./errors.js";
export { reconnectDelay, DEFAULT_RECONNECT } from "./backoff.js";
export type { ReconnectOptions } from "./backoff.js";
export type { TokenSource } from "./token.js";
export type {
  Filters,
  Position,
  PresenceChange,
  PresenceInfo,
  Reply,
  ResyncInfo,
  SignalboxEvent,
  SubscribedInfo,
} from "./protocol.js";
