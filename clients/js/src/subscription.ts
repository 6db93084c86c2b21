/**
 * Subscriptions: what the application holds (`Subscription`) and what the client tracks per
 * topic to resume it without loss or repetition (`TopicState`).
 *
 * This module never talks to the socket; the client decides what to send.
 */
import { Emitter, callSafely } from "./emitter.js";
import type { SignalboxError } from "./errors.js";
import type { Filters, PresenceChange, ResyncInfo, SignalboxEvent, SubscribedInfo } from "./protocol.js";

/** The notices a `Subscription` emits. */
export interface SubscriptionEvents {
  /** After every (re)subscribe, with the topic's position and whether the resume recovered. */
  subscribed: SubscribedInfo;
  /** A resume could not recover the missed events: rebuild from this state (or your backend). */
  resync: ResyncInfo;
  /** Someone subscribed (namespaces with `join_leave`). */
  join: PresenceChange;
  /** Someone left (namespaces with `join_leave`). */
  leave: PresenceChange;
  /** The gateway refused the subscription (`AUTHORIZATION_ERROR`, `VALIDATION_ERROR`); it has ended. */
  error: SignalboxError;
}

/** What a `Subscription` needs from the client that made it. */
export interface SubscriptionOwner {
  release(subscription: Subscription<never>): void;
}

/** One `subscribe()` call: its handler and its notices. End it with `unsubscribe()`. */
export class Subscription<E = SignalboxEvent> extends Emitter<SubscriptionEvents> {
  /** The topic. */
  readonly topic: string;
  private active = true;
  private held = false;

  /** @internal Made by `Signalbox.subscribe`. */
  constructor(
    topic: string,
    private readonly handler: (event: E) => void,
    private readonly owner: SubscriptionOwner,
  ) {
    super();
    this.topic = topic;
  }

  /** Whether the subscription still receives (it ends on `unsubscribe()` or a refusal). */
  get isActive(): boolean {
    return this.active;
  }

  /** Stops receiving; the topic is unsubscribed once no other `Subscription` holds it. */
  unsubscribe(): void {
    if (!this.active) return;
    this.active = false;
    this.owner.release(this as unknown as Subscription<never>);
  }

  /** @internal Whether the application listens for this subscription's errors. */
  hasErrorListener(): boolean {
    return this.hasListeners("error");
  }

  /** @internal */
  deliver(event: SignalboxEvent): void {
    if (this.active && !this.held) callSafely(this.handler, event as unknown as E);
  }

  /** @internal While a newcomer waits for the topic's state, events are not passed on. */
  holdDeliveries(held: boolean): void {
    this.held = held;
  }

  /** @internal */
  notify<K extends keyof SubscriptionEvents>(name: K, payload: SubscriptionEvents[K]): void {
    if (this.active) this.emit(name, payload);
  }

  /** @internal The gateway refused the topic: the subscription ends. */
  fail(error: SignalboxError): void {
    if (!this.active) return;
    this.emit("error", error);
    this.active = false;
  }
}

/**
 * Where a subscribe of this topic stands on the current connection:
 * - `idle`: not sent on this connection (or no connection);
 * - `subscribing`: sent, reply awaited; events that arrive meanwhile are held back;
 * - `resyncing`: answered `recovered: false`, the retained state is being fetched;
 * - `live`: events are delivered.
 */
export type TopicPhase = "idle" | "subscribing" | "resyncing" | "live";

/** Per topic: who listens, the last offset delivered and its epoch, and the subscribe's phase. */
export class TopicState {
  readonly subscriptions = new Set<Subscription<never>>();
  phase: TopicPhase = "idle";
  /** The epoch `lastOffset` belongs to; unset until the first `subscribed`. */
  epoch: string | undefined;
  /** The offset of the last event delivered (or the position at a fresh subscribe). */
  lastOffset: number | undefined;
  /** A resume lost events and the application has not been told yet (survives a reconnect). */
  resyncOwed = false;
  /** Events held back while `resyncing`, delivered after the `resync` notice. */
  held: SignalboxEvent[] = [];
  /** Duplicates dropped (events at or below `lastOffset`). */
  duplicatesDropped = 0;
  /** Retries of a subscribe the broker could not serve yet (`BROKER_UNAVAILABLE`). */
  retries = 0;
  /** The pending retry of such a subscribe. */
  retryTimer: ReturnType<typeof setTimeout> | undefined;
  /** While resyncing: the retained frame that followed `subscribed` (the state at the new position). */
  pendingRetained: SignalboxEvent | null = null;

  constructor(
    readonly topic: string,
    readonly filters: Filters | undefined,
  ) {}

  /** Back to `idle` (the connection ended, or the topic was dropped): nothing held, no retry pending. */
  reset(): void {
    this.phase = "idle";
    this.held = [];
    this.pendingRetained = null;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  /** The `since` to resume with, when this topic has been subscribed before. */
  since(): { offset: number; epoch: string } | undefined {
    if (this.epoch === undefined || this.lastOffset === undefined) return undefined;
    return { offset: this.lastOffset, epoch: this.epoch };
  }

  /** Calls `fn` for each active subscription. */
  forEach(fn: (subscription: Subscription<never>) => void): void {
    for (const subscription of [...this.subscriptions]) fn(subscription);
  }
}
