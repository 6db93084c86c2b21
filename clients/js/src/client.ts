/**
 * `Signalbox`: one connection to the gateway that survives everything a network does.
 *
 * It owns the socket's life (connect, heartbeat, reconnect with backoff), the token's life
 * (provider, refresh before `exp`, new token after `4001`), requests matched by
 * `requestId`, and the topics: after every reconnect each topic is subscribed again with
 * `since` (its last offset and epoch), so the application sees every event once, in order.
 * It never parses application events beyond `topic`, `offset` and `retained`.
 */
import { DEFAULT_RECONNECT, reconnectDelay, type ReconnectOptions } from "./backoff.js";
import { Emitter, callSafely } from "./emitter.js";
import { ClientErrorCode, SignalboxError } from "./errors.js";
import {
  checkTopic,
  isEvent,
  isObject,
  positionOf,
  type Filters,
  type Frame,
  type PresenceChange,
  type PresenceInfo,
  type Reply,
  type SignalboxEvent,
} from "./protocol.js";
import { Subscription, TopicState, type SubscriptionOwner } from "./subscription.js";
import { obtainToken, refreshDelay, tokenExpiresAt, type TokenSource } from "./token.js";

/**
 * The part of the WebSocket API the client uses (browsers' `WebSocket`, or `ws` on Node).
 * The handlers take `any` so both implementations' own event types fit.
 */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType?: string;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  /* eslint-disable @typescript-eslint/no-explicit-any */
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: any }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: any) => void) | null;
  /* eslint-enable @typescript-eslint/no-explicit-any */
}

/** A WebSocket constructor: `globalThis.WebSocket`, or `WebSocket` from the `ws` package. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Options of `new Signalbox(…)`. */
export interface SignalboxOptions {
  /** The gateway's WebSocket URL, e.g. `wss://rt.example.com/ws` (`http(s)` and relative URLs work too). */
  url: string;
  /** A token, or a provider called at every connect, before expiry and after a `4001` close. */
  token?: TokenSource;
  /** The WebSocket constructor (default `globalThis.WebSocket`; on Node < 22 pass `ws`'s). */
  WebSocket?: WebSocketConstructor;
  /** Backoff between reconnect attempts (default 250 ms to 30 s, full jitter). */
  reconnect?: ReconnectOptions;
  /** Default timeout of `request()` and friends, waiting for the connection included (default 10 s). */
  requestTimeoutMs?: number;
  /** How long one connect attempt may take before it is abandoned (default 10 s). */
  connectTimeoutMs?: number;
  /** An application `ping` every this many ms while connected; a missing `pong` counts as network loss (default 25 s; 0 turns it off). */
  heartbeatMs?: number;
  /** Connect at once (default `true`); otherwise call `connect()`. */
  autoConnect?: boolean;
}

/** Options of `subscribe()`. */
export interface SubscribeOptions {
  /** Only events whose fields match (SPEC §5). Every `subscribe()` of one topic must use the same filters. */
  filters?: Filters;
  /** Resume from a position kept across page loads (from `positions()`); used when this client does not hold the topic yet. */
  since?: { offset: number; epoch: string };
}

/** Options of `request()`. */
export interface RequestOptions {
  /** Overrides `requestTimeoutMs` for this call. */
  timeoutMs?: number;
}

/** The notices a `Signalbox` emits. */
export interface SignalboxEvents {
  /** The gateway accepted the connection (after every reconnect too). */
  connected: { connectionId: string; userId: string };
  /** The connection ended; `willReconnect` says whether the client reconnects by itself. */
  disconnected: { code: number; reason: string; willReconnect: boolean };
  /** A reconnect attempt is scheduled. */
  reconnecting: { attempt: number; delayMs: number };
  /** Every event of every topic, after de-duplication (including topics the server subscribed by itself). */
  event: SignalboxEvent;
  /** A `join` or `leave` on any topic. */
  presence: PresenceChange;
  /** A frame that is neither an event nor a reply: a backend's direct send, or an API Gateway post (binary frames as `ArrayBuffer`/`Buffer`). */
  message: unknown;
  /** Something went wrong that no caller awaits (a refused subscription, a failed refresh, a token provider error). */
  error: SignalboxError;
  /** The token was replaced on the open connection (`refresh`). */
  refreshed: { expiresAt: string | undefined };
}

/** Close codes after which the client does not reconnect: a deliberate close, or a policy violation. */
const FINAL_CLOSE_CODES = new Set([1000, 1008]);
/** Close code of a token that expired or was revoked. */
const TOKEN_EXPIRED = 4001;
/** What a locally abandoned socket (no pong, connect timeout) is reported as: network loss. */
const ABNORMAL_CLOSURE = 1006;
/** Close code of a slow consumer (its send queue overflowed). */
const SLOW_CONSUMER = 4008;
/** A `4008` this soon after `connected` counts as a failed catch-up. */
const QUICK_CUT_MS = 10_000;
/** After this many failed catch-ups in a row, topics are subscribed afresh (with `resync`). */
const MAX_QUICK_CUTS = 3;

interface Pending {
  onReply(frame: Frame): void;
  onError(error: SignalboxError): void;
  timer: ReturnType<typeof setTimeout>;
}

interface Waiter {
  resolve(): void;
  reject(error: SignalboxError): void;
}

type State = "idle" | "connecting" | "open" | "closed";

/** A connection to a Signalbox gateway. See the package README. */
export class Signalbox extends Emitter<SignalboxEvents> implements SubscriptionOwner {
  private readonly url: string;
  private readonly WebSocketImpl: WebSocketConstructor;
  private readonly reconnectOptions: Required<ReconnectOptions>;
  private readonly requestTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly heartbeatMs: number;
  private tokenSource: TokenSource | undefined;
  /** The token the current connection runs on (what `refresh` replaced last). */
  private token: string | undefined;

  private state: State = "idle";
  private socket: WebSocketLike | null = null;
  private attempt = 0;
  /** Bumped by every connect attempt, `connect()` and `close()`: a stale attempt's callbacks do nothing. */
  private generation = 0;
  /** When the current connection was accepted (for telling a failed catch-up from a slow reader). */
  private connectedAt = 0;
  /** `4008` closes in a row that came soon after connecting. */
  private quickCuts = 0;
  private nextRequest = 0;
  private readonly pending = new Map<string, Pending>();
  private readonly waiters = new Set<Waiter>();
  private readonly topics = new Map<string, TopicState>();
  private connection: { connectionId: string; userId: string } | undefined;

  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private connectTimer: ReturnType<typeof setTimeout> | undefined;
  private heartbeatTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(options: SignalboxOptions) {
    super();
    if (!isObject(options)) throw invalid("options must be an object");
    this.url = checkUrl(options.url);
    const impl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (typeof impl !== "function") {
      throw invalid("no WebSocket implementation: pass { WebSocket } (e.g. `import WebSocket from \"ws\"` on Node < 22)");
    }
    this.WebSocketImpl = impl;
    if (options.token !== undefined && typeof options.token !== "string" && typeof options.token !== "function") {
      throw invalid("token must be a string or a function returning one");
    }
    this.tokenSource = options.token;
    this.reconnectOptions = {
      minDelayMs: nonNegative(options.reconnect?.minDelayMs, DEFAULT_RECONNECT.minDelayMs, "reconnect.minDelayMs"),
      maxDelayMs: nonNegative(options.reconnect?.maxDelayMs, DEFAULT_RECONNECT.maxDelayMs, "reconnect.maxDelayMs"),
    };
    this.requestTimeoutMs = nonNegative(options.requestTimeoutMs, 10_000, "requestTimeoutMs");
    this.connectTimeoutMs = nonNegative(options.connectTimeoutMs, 10_000, "connectTimeoutMs");
    this.heartbeatMs = nonNegative(options.heartbeatMs, 25_000, "heartbeatMs");
    if (options.autoConnect !== false) this.connect();
  }

  /** The connection's id and user once connected (`undefined` in between). */
  get connectionInfo(): { connectionId: string; userId: string } | undefined {
    return this.state === "open" ? this.connection : undefined;
  }

  /** Whether the gateway has accepted the current connection. */
  get isConnected(): boolean {
    return this.state === "open";
  }

  /** Opens the connection (again, after `close()`); does nothing while connecting or connected. */
  connect(): void {
    if (this.state === "connecting" || this.state === "open") return;
    this.state = "connecting";
    this.attempt = 0;
    void this.openSocket();
  }

  /** Closes the connection for good: no reconnect; pending requests reject with `CLOSED`. */
  close(): void {
    if (this.state === "closed") return;
    const wasOpen = this.state === "open";
    this.state = "closed";
    this.generation += 1;
    this.clearTimers();
    const socket = this.detachSocket();
    socket?.close(1000, "client closed");
    this.failPending(new SignalboxError(ClientErrorCode.Closed, "the client was closed"));
    for (const topic of this.topics.values()) topic.reset();
    if (wasOpen) this.emit("disconnected", { code: 1000, reason: "client closed", willReconnect: false });
  }

  /**
   * Subscribes to `topic`; `handler` gets every event once, in offset order, across
   * reconnects. Throws `VALIDATION_ERROR` on a bad topic, or on filters that differ from
   * another live subscription of the same topic.
   */
  subscribe<E = SignalboxEvent>(topic: string, handler: (event: E) => void, options: SubscribeOptions = {}): Subscription<E> {
    checkTopic(topic);
    if (typeof handler !== "function") throw invalid("subscribe needs a handler function");
    if (options.filters !== undefined && !isObject(options.filters)) throw invalid("filters must be an object");
    const since = options.since;
    if (since !== undefined && (!isObject(since) || !Number.isSafeInteger(since.offset) || since.offset < 0 || typeof since.epoch !== "string")) {
      throw invalid("since must be { offset: a non-negative integer, epoch: a string }");
    }
    let state = this.topics.get(topic);
    if (state && JSON.stringify(state.filters) !== JSON.stringify(options.filters)) {
      throw invalid(`topic ${topic} is already subscribed with other filters`);
    }
    if (!state) {
      state = new TopicState(topic, options.filters);
      if (since) {
        state.epoch = since.epoch;
        state.lastOffset = since.offset;
      }
      this.topics.set(topic, state);
    }
    const subscription = new Subscription<E>(topic, handler, this);
    state.subscriptions.add(subscription as unknown as Subscription<never>);
    if (state.phase === "idle" && this.state === "open") {
      this.sendSubscribe(state);
    } else if (state.phase === "live") {
      this.welcome(state, subscription as unknown as Subscription<never>);
    }
    return subscription;
  }

  /**
   * A second `subscribe()` of a topic already live: the newcomer gets the retained state
   * (as a fresh subscribe would) and then the events after it, nothing older.
   */
  private welcome(state: TopicState, subscription: Subscription<never>): void {
    subscription.holdDeliveries(true);
    this.send(
      { action: "request_status", topic: state.topic },
      this.requestTimeoutMs,
      (frame) => {
        subscription.holdDeliveries(false);
        if (isObject(frame.state) && isEvent(frame.state)) subscription.deliver({ ...frame.state, retained: true });
        subscription.notify("subscribed", { topic: state.topic, ...positionOf(frame), recovered: true });
      },
      () => subscription.holdDeliveries(false),
    );
  }

  /** @internal Called by `Subscription.unsubscribe()`. */
  release(subscription: Subscription<never>): void {
    const state = this.topics.get(subscription.topic);
    if (!state) return;
    state.subscriptions.delete(subscription);
    if (state.subscriptions.size > 0) return;
    this.topics.delete(state.topic);
    state.reset();
    // The gateway's own subscriptions (user:<you>, global) stay: they feed the `event` stream.
    if (this.state === "open" && !this.isAutomatic(state.topic)) {
      this.send({ action: "unsubscribe", topic: state.topic }, this.requestTimeoutMs, () => {}, () => {});
    }
  }

  /**
   * Sends `{action, data, requestId}` and resolves with the reply (`accepted`, `published`,
   * …); rejects with `SignalboxError` carrying the gateway's code, or `TIMEOUT`,
   * `DISCONNECTED` (the connection dropped before the reply: the action may or may not have
   * been carried out) or `CLOSED`. Waits for the connection if it is not up yet.
   */
  async request<R = Reply>(action: string, data?: Record<string, unknown>, options: RequestOptions = {}): Promise<R> {
    if (typeof action !== "string" || action.length === 0) throw invalid("action must be a non-empty string");
    if (data !== undefined && !isObject(data)) throw invalid("data must be an object");
    return (await this.call({ action, ...(data === undefined ? {} : { data }) }, options.timeoutMs)) as R;
  }

  /** Publishes into a topic whose namespace lets clients publish; resolves with the event's offset. */
  async publish(topic: string, event: Record<string, unknown>, options: { retain?: boolean } = {}): Promise<{ topic: string; offset: number }> {
    checkTopic(topic);
    if (!isObject(event) || typeof event.type !== "string") throw invalid("event must be an object with a string `type`");
    const reply = await this.call({ action: "publish", topic, event, ...(options.retain ? { retain: true } : {}) });
    return { topic, offset: typeof reply.offset === "number" ? reply.offset : 0 };
  }

  /** Who is subscribed to `topic` (allowed to whoever may subscribe to it). */
  async presence(topic: string): Promise<PresenceInfo> {
    checkTopic(topic);
    const reply = await this.call({ action: "presence", topic });
    return {
      topic,
      users: Array.isArray(reply.users) ? reply.users.filter((u): u is string => typeof u === "string") : [],
      connections: typeof reply.connections === "number" ? reply.connections : 0,
    };
  }

  /** The topic's retained state and position (`request_status`). */
  async status(topic: string): Promise<{ topic: string; state: SignalboxEvent | null; offset: number; epoch: string }> {
    checkTopic(topic);
    const reply = await this.call({ action: "request_status", topic });
    return { topic, state: isObject(reply.state) && isEvent(reply.state) ? reply.state : null, ...positionOf(reply) };
  }

  /**
   * Replaces the connection's token now: asks the provider for a new one and sends
   * `refresh`. The client does this by itself before `exp`; call it after a permission change.
   */
  async refresh(): Promise<{ expiresAt: string | undefined }> {
    if (typeof this.tokenSource !== "function") {
      throw invalid("refresh needs a token provider: pass { token: async () => newToken }");
    }
    const token = await obtainToken(this.tokenSource);
    if (token === undefined) throw invalid("the token provider returned no token");
    const reply = await this.call({ action: "refresh", token });
    this.token = token;
    this.scheduleRefresh();
    const expiresAt = typeof reply.expiresAt === "string" ? reply.expiresAt : undefined;
    this.emit("refreshed", { expiresAt });
    return { expiresAt };
  }

  /** Topics this client tracks, with the last offset and epoch it delivered. */
  positions(): Map<string, { offset: number; epoch: string } | undefined> {
    return new Map([...this.topics].map(([topic, state]) => [topic, state.since()]));
  }

  // ---- connection life --------------------------------------------------------------

  private async openSocket(): Promise<void> {
    const generation = ++this.generation;
    const current = () => generation === this.generation && this.state === "connecting";
    // The whole attempt, token provider included, is bounded.
    clearTimeout(this.connectTimer);
    this.connectTimer = setTimeout(() => {
      if (!current()) return;
      if (this.socket) {
        this.abandon(this.socket, "connect timeout");
      } else {
        this.generation += 1; // the provider's late answer is ignored
        this.emit("error", new SignalboxError(ClientErrorCode.TokenProvider, `the token provider did not answer within ${this.connectTimeoutMs} ms`));
        this.scheduleReconnect();
      }
    }, this.connectTimeoutMs);
    let token: string | undefined;
    try {
      token = await obtainToken(this.tokenSource);
    } catch (err) {
      if (!current()) return;
      clearTimeout(this.connectTimer);
      this.emit("error", err instanceof SignalboxError ? err : new SignalboxError(ClientErrorCode.TokenProvider, String(err)));
      this.scheduleReconnect();
      return;
    }
    if (!current()) return;
    const expiresAt = tokenExpiresAt(token);
    if (expiresAt !== undefined && expiresAt <= Date.now()) {
      clearTimeout(this.connectTimer);
      if (typeof this.tokenSource === "string") {
        this.giveUp(new SignalboxError("AUTHENTICATION_ERROR", "the token has expired and no token provider was given"));
      } else {
        this.emit("error", new SignalboxError(ClientErrorCode.TokenProvider, "the token provider returned an expired token"));
        this.scheduleReconnect();
      }
      return;
    }
    let socket: WebSocketLike;
    try {
      socket = new this.WebSocketImpl(socketUrl(this.url, token));
    } catch (err) {
      this.emit("error", invalid(`cannot open a WebSocket to ${this.url}: ${String(err)}`));
      this.scheduleReconnect();
      return;
    }
    this.token = token;
    this.socket = socket;
    try {
      socket.binaryType = "arraybuffer";
    } catch {
      // Implementations without binaryType deliver binary frames their own way.
    }
    socket.onmessage = (event) => {
      if (this.socket === socket) this.onFrame(event.data);
    };
    socket.onclose = (event) => {
      if (this.socket === socket) this.onClosed(event.code, event.reason);
    };
    socket.onerror = () => {
      // A close event always follows; the reason is there.
    };
  }

  /** Drops a socket that stopped answering without waiting for a close handshake that may never come. */
  private abandon(socket: WebSocketLike, reason: string): void {
    if (this.socket !== socket) return;
    this.detachSocket();
    try {
      socket.close(4000, reason);
    } catch {
      // Already closing; it is detached either way.
    }
    this.onClosed(ABNORMAL_CLOSURE, reason);
  }

  private detachSocket(): WebSocketLike | null {
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onmessage = null;
      socket.onclose = null;
      // Not null: `ws` emits `error` when a socket still connecting is closed, and an
      // `error` without a listener would crash the Node process.
      socket.onerror = () => {};
      socket.onopen = null;
    }
    return socket;
  }

  private onClosed(code: number, reason: string): void {
    const wasOpen = this.state === "open";
    this.detachSocket();
    this.clearTimers();
    this.failPending(new SignalboxError(ClientErrorCode.Disconnected, `the connection closed (${code}${reason ? ` ${reason}` : ""}) before the reply`));
    // Events held while resyncing are after the new position: a resume replays them.
    for (const topic of this.topics.values()) topic.reset();
    if (this.state === "closed") return;
    let willReconnect = true;
    let finalError: SignalboxError | undefined;
    if (FINAL_CLOSE_CODES.has(code)) {
      willReconnect = false;
    } else if (code === TOKEN_EXPIRED && typeof this.tokenSource !== "function") {
      willReconnect = false;
      finalError = new SignalboxError("AUTHENTICATION_ERROR", "the token expired (4001) and no token provider was given");
    }
    if (wasOpen) this.emit("disconnected", { code, reason, willReconnect });
    if (willReconnect) this.countSlowCut(code, wasOpen);
    if (!willReconnect) {
      this.state = "idle";
      this.failWaiters(new SignalboxError(ClientErrorCode.Closed, `the gateway closed the connection (${code})`));
      if (finalError) this.emit("error", finalError);
      return;
    }
    this.state = "connecting";
    this.scheduleReconnect();
  }

  /**
   * A resume replays everything missed in one go; when that is more than the gateway's send
   * queue holds (large events, a long absence), every resume is cut with `4008` again. After
   * three such cuts in a row the topics are subscribed afresh: the application gets `resync`
   * instead of a reconnect loop.
   */
  private countSlowCut(code: number, wasOpen: boolean): void {
    if (code !== SLOW_CONSUMER || !wasOpen) {
      if (wasOpen) this.quickCuts = 0;
      return;
    }
    this.quickCuts = Date.now() - this.connectedAt < QUICK_CUT_MS ? this.quickCuts + 1 : 1;
    if (this.quickCuts < MAX_QUICK_CUTS) return;
    this.quickCuts = 0;
    for (const topic of this.topics.values()) {
      if (topic.since() === undefined) continue;
      topic.resyncOwed = true;
      topic.epoch = undefined;
      topic.lastOffset = undefined;
    }
    this.emit(
      "error",
      new SignalboxError(
        ClientErrorCode.SlowConsumer,
        `closed with 4008 ${MAX_QUICK_CUTS} times in a row while catching up: what was missed does not fit the gateway's send queue, so topics are subscribed afresh (resync follows)`,
      ),
    );
  }

  private giveUp(error: SignalboxError): void {
    this.state = "idle";
    this.failWaiters(error);
    this.emit("error", error);
  }

  private scheduleReconnect(): void {
    if (this.state !== "connecting") return;
    const delayMs = reconnectDelay(this.attempt, this.reconnectOptions);
    this.attempt += 1;
    this.emit("reconnecting", { attempt: this.attempt, delayMs });
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.state === "connecting" && !this.socket) void this.openSocket();
    }, delayMs);
  }

  private onConnected(frame: Frame): void {
    clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    this.connection = {
      connectionId: typeof frame.connectionId === "string" ? frame.connectionId : "",
      userId: typeof frame.userId === "string" ? frame.userId : "",
    };
    this.state = "open";
    this.attempt = 0;
    this.connectedAt = Date.now();
    for (const waiter of [...this.waiters]) waiter.resolve();
    this.waiters.clear();
    this.emit("connected", { ...this.connection });
    if (this.state !== "open") return; // a listener closed the client
    for (const topic of this.topics.values()) {
      if (topic.phase === "idle") this.sendSubscribe(topic); // a `connected` listener may have subscribed already
    }
    this.scheduleRefresh();
    this.scheduleHeartbeat();
  }

  private clearTimers(): void {
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.connectTimer);
    clearTimeout(this.heartbeatTimer);
    clearTimeout(this.refreshTimer);
    this.reconnectTimer = this.connectTimer = this.heartbeatTimer = this.refreshTimer = undefined;
  }

  private scheduleHeartbeat(): void {
    if (this.heartbeatMs === 0) return;
    clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = setTimeout(() => {
      const socket = this.socket;
      if (!socket || this.state !== "open") return;
      this.send(
        { action: "ping" },
        Math.min(this.heartbeatMs, 10_000),
        () => this.scheduleHeartbeat(),
        (error) => {
          if (error.code === ClientErrorCode.Timeout) this.abandon(socket, "no pong");
          else if (error.code !== ClientErrorCode.Disconnected) this.scheduleHeartbeat(); // e.g. rate limited: still alive
        },
      );
    }, this.heartbeatMs);
  }

  private scheduleRefresh(): void {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    if (typeof this.tokenSource !== "function" || this.state !== "open") return;
    const expiresAt = tokenExpiresAt(this.token);
    if (expiresAt === undefined) return;
    this.refreshTimer = setTimeout(() => this.runRefresh(), refreshDelay(expiresAt, Date.now()));
  }

  /** A scheduled refresh; on failure, tried again each second while the old token lasts. */
  private runRefresh(): void {
    this.refreshTimer = undefined;
    this.refresh().catch((err: unknown) => {
      const error = err instanceof SignalboxError ? err : new SignalboxError(ClientErrorCode.TokenProvider, String(err));
      if (error.code === ClientErrorCode.Disconnected || error.code === ClientErrorCode.Closed) return;
      this.emit("error", error);
      // A 4001 close gets a new token either way.
      if (this.state === "open" && !this.refreshTimer && (tokenExpiresAt(this.token) ?? 0) > Date.now() + 1_000) {
        this.refreshTimer = setTimeout(() => this.runRefresh(), 1_000);
      }
    });
  }

  // ---- requests -----------------------------------------------------------------------

  /** Sends a message with a fresh `requestId`; exactly one of the callbacks runs, synchronously with the frame that decides it. */
  private send(message: Frame, timeoutMs: number, onReply: (frame: Frame) => void, onError: (error: SignalboxError) => void): void {
    const socket = this.socket;
    if (!socket || this.state !== "open") {
      onError(new SignalboxError(ClientErrorCode.Disconnected, "not connected"));
      return;
    }
    const requestId = `sb${++this.nextRequest}`;
    let text: string;
    try {
      text = JSON.stringify({ ...message, requestId });
    } catch (err) {
      onError(invalid(`the message cannot be encoded as JSON: ${String(err)}`));
      return;
    }
    const timer = setTimeout(() => {
      this.pending.delete(requestId);
      onError(new SignalboxError(ClientErrorCode.Timeout, `no reply to ${String(message.action)} within ${timeoutMs} ms`, requestId));
    }, timeoutMs);
    this.pending.set(requestId, { onReply, onError, timer });
    try {
      socket.send(text);
    } catch (err) {
      clearTimeout(timer);
      this.pending.delete(requestId);
      onError(new SignalboxError(ClientErrorCode.Disconnected, `the message could not be sent: ${String(err)}`));
    }
  }

  /** `send` as a promise that first waits for the connection, all within one timeout. */
  private async call(message: Frame, timeoutMs = this.requestTimeoutMs): Promise<Reply> {
    const deadline = Date.now() + timeoutMs;
    await this.whenOpen(timeoutMs, String(message.action));
    return new Promise<Reply>((resolve, reject) => {
      this.send(
        message,
        Math.max(1, deadline - Date.now()),
        (frame) => resolve(frame as Reply),
        reject,
      );
    });
  }

  private whenOpen(timeoutMs: number, what: string): Promise<void> {
    if (this.state === "open") return Promise.resolve();
    if (this.state === "closed") return Promise.reject(new SignalboxError(ClientErrorCode.Closed, "the client was closed"));
    if (this.state === "idle") {
      return Promise.reject(new SignalboxError(ClientErrorCode.Closed, "not connected: call connect() first"));
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new SignalboxError(ClientErrorCode.Timeout, `not connected within ${timeoutMs} ms for ${what}`));
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }

  private failPending(error: SignalboxError): void {
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const entry of pending) {
      clearTimeout(entry.timer);
      callSafely(entry.onError, error);
    }
    if (this.state === "closed") this.failWaiters(error);
  }

  private failWaiters(error: SignalboxError): void {
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const waiter of waiters) waiter.reject(error);
  }

  // ---- subscriptions ------------------------------------------------------------------

  private sendSubscribe(state: TopicState): void {
    const since = state.since();
    const message: Frame = { action: "subscribe", topic: state.topic };
    if (since) message.since = since;
    if (state.filters !== undefined) message.filters = state.filters;
    if (this.isAutomatic(state.topic)) {
      // The gateway subscribed this connection to the topic itself when it opened, so a
      // subscribe would be an idempotent re-subscribe that replays nothing and sends no
      // retained state. Dropping the automatic subscription first makes it a real one.
      this.send({ action: "unsubscribe", topic: state.topic }, this.requestTimeoutMs, () => {}, () => {});
    }
    state.phase = "subscribing";
    this.send(
      message,
      this.requestTimeoutMs,
      (frame) => this.onSubscribeReply(state, frame, since !== undefined),
      (error) => this.onSubscribeError(state, error),
    );
  }

  private isAutomatic(topic: string): boolean {
    return topic === "global" || (this.connection !== undefined && topic === `user:${this.connection.userId}`);
  }

  private onSubscribeReply(state: TopicState, frame: Frame, resumed: boolean): void {
    if (this.topics.get(state.topic) !== state) return;
    if (frame.type === "error") {
      this.onSubscribeError(state, SignalboxError.fromFrame(frame));
      return;
    }
    const { offset, epoch } = positionOf(frame);
    const recovered = frame.recovered === true;
    state.retries = 0;
    // Anything that arrived before the reply is at or below `offset`: either the resume
    // replays it next, or it precedes this subscription.
    state.held = [];
    state.epoch = epoch;
    if (!resumed || !recovered) state.lastOffset = offset;
    const info = { topic: state.topic, offset, epoch, recovered };
    if ((resumed && !recovered) || state.resyncOwed) {
      state.resyncOwed = true;
      state.phase = "resyncing";
      state.forEach((s) => s.notify("subscribed", info));
      this.fetchResyncState(state);
      return;
    }
    state.phase = "live";
    state.forEach((s) => s.notify("subscribed", info));
  }

  private fetchResyncState(state: TopicState): void {
    const finish = () => {
      if (this.topics.get(state.topic) !== state || state.phase !== "resyncing") return;
      // The retained frame the gateway sent right after `subscribed` is the state at the
      // new position; the status reply, queued after it, only marks that it has come.
      const retained = state.pendingRetained;
      state.pendingRetained = null;
      state.resyncOwed = false;
      state.phase = "live";
      const info = { topic: state.topic, state: retained, offset: state.lastOffset ?? 0, epoch: state.epoch ?? "" };
      state.forEach((s) => s.notify("resync", info));
      const held = state.held;
      state.held = [];
      for (const event of held) this.deliver(state, event);
    };
    this.send(
      { action: "request_status", topic: state.topic },
      this.requestTimeoutMs,
      () => finish(),
      (error) => {
        if (error.code === ClientErrorCode.Disconnected) return; // owed: told after the reconnect
        this.emit("error", error);
        finish();
      },
    );
  }

  private onSubscribeError(state: TopicState, error: SignalboxError): void {
    if (this.topics.get(state.topic) !== state) return;
    state.phase = "idle";
    if (error.code === ClientErrorCode.Disconnected) return; // resubscribed after the reconnect
    if (error.code === ClientErrorCode.Timeout) {
      // The gateway may still carry it out, and then a retry would be a re-subscribe that
      // replays nothing: start over on a new connection instead.
      this.emit("error", error);
      if (this.socket) this.abandon(this.socket, "subscribe timed out");
      return;
    }
    const transient = error.code === "BROKER_UNAVAILABLE" || error.code === "RATE_LIMIT_EXCEEDED" || error.code === "INTERNAL_ERROR";
    if (transient) {
      // Refused: nothing was subscribed, so the same subscribe can be sent again.
      const delay = reconnectDelay(state.retries++, this.reconnectOptions);
      clearTimeout(state.retryTimer);
      state.retryTimer = setTimeout(() => {
        state.retryTimer = undefined;
        if (this.topics.get(state.topic) === state && state.phase === "idle" && this.state === "open") this.sendSubscribe(state);
      }, delay);
      this.emit("error", error);
      return;
    }
    // Refused for good (AUTHORIZATION_ERROR, VALIDATION_ERROR): the subscriptions end.
    this.topics.delete(state.topic);
    let told = false;
    state.forEach((s) => {
      told = told || s.hasErrorListener();
      s.fail(error);
    });
    if (!told) this.emit("error", error);
  }

  private deliver(state: TopicState, event: SignalboxEvent): void {
    if (event.retained === true) {
      // The state after a fresh subscribe; it is at or below the position, so it never
      // moves `lastOffset`. While resyncing, the `resync` notice carries it instead.
      if (state.phase === "live") this.dispatch(state, event);
      return;
    }
    if (state.lastOffset !== undefined && event.offset <= state.lastOffset) {
      state.duplicatesDropped += 1;
      return;
    }
    state.lastOffset = event.offset;
    this.dispatch(state, event);
  }

  private dispatch(state: TopicState, event: SignalboxEvent): void {
    state.forEach((s) => s.deliver(event));
    this.emit("event", event);
  }

  // ---- frames ---------------------------------------------------------------------------

  private onFrame(data: unknown): void {
    if (typeof data !== "string") {
      this.emit("message", data);
      return;
    }
    let frame: unknown;
    try {
      frame = JSON.parse(data);
    } catch {
      this.emit("error", new SignalboxError(ClientErrorCode.BadFrame, `the gateway sent a frame that is not JSON: ${data.slice(0, 80)}`));
      return;
    }
    if (!isObject(frame)) {
      this.emit("message", frame);
      return;
    }
    if (typeof frame.requestId === "string") {
      const entry = this.pending.get(frame.requestId);
      if (entry) {
        this.pending.delete(frame.requestId);
        clearTimeout(entry.timer);
        if (frame.type === "error") entry.onError(SignalboxError.fromFrame(frame));
        else entry.onReply(frame);
        return;
      }
      // The answer to a request that already timed out (events never carry a requestId).
      if (frame.type !== "error") this.emit("message", frame);
      return;
    }
    if (isEvent(frame)) {
      this.onEvent(frame);
      return;
    }
    switch (frame.type) {
      case "connected":
        if (this.state === "connecting") this.onConnected(frame);
        return;
      case "join":
      case "leave":
        this.onPresence(frame);
        return;
      case "error":
        this.emit("error", SignalboxError.fromFrame(frame));
        return;
      default:
        this.emit("message", frame);
    }
  }

  private onEvent(event: SignalboxEvent): void {
    const state = this.topics.get(event.topic);
    if (!state) {
      this.emit("event", event); // a topic the gateway subscribed by itself
      return;
    }
    switch (state.phase) {
      case "live":
        this.deliver(state, event);
        return;
      case "resyncing":
        if (event.retained === true) state.pendingRetained = event;
        else state.held.push(event);
        return;
      default:
        // Before the reply: what the resume replays, or what precedes the subscription.
        state.duplicatesDropped += 1;
    }
  }

  private onPresence(frame: Frame): void {
    if (typeof frame.topic !== "string" || typeof frame.userId !== "string" || typeof frame.connectionId !== "string") {
      this.emit("message", frame);
      return;
    }
    const change: PresenceChange = {
      type: frame.type === "join" ? "join" : "leave",
      topic: frame.topic,
      userId: frame.userId,
      connectionId: frame.connectionId,
    };
    this.topics.get(change.topic)?.forEach((s) => s.notify(change.type, change));
    this.emit("presence", change);
  }
}

function invalid(message: string): SignalboxError {
  return new SignalboxError(ClientErrorCode.Validation, message);
}

function nonNegative(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) throw invalid(`${name} must be a non-negative number`);
  return value;
}

function checkUrl(url: unknown): string {
  if (typeof url !== "string" || url.length === 0) throw invalid("url must be the gateway's WebSocket URL");
  try {
    socketUrl(url, undefined);
  } catch {
    throw invalid(`url is not a valid URL: ${url}`);
  }
  return url;
}

/** The URL to open: relative URLs resolved against the page, `http(s)` mapped to `ws(s)`, the token in `?token=`. */
function socketUrl(base: string, token: string | undefined): string {
  const page = (globalThis as { location?: { href?: string } }).location?.href;
  const url = new URL(base, page);
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  if (url.protocol !== "ws:" && url.protocol !== "wss:") throw new Error(`unsupported scheme ${url.protocol}`);
  if (token !== undefined) url.searchParams.set("token", token);
  return url.toString();
}
