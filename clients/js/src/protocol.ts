/** The gateway's native protocol as the client sees it: frame shapes and argument checks. */
import { ClientErrorCode, SignalboxError } from "./errors.js";

/** An event as delivered: the publisher's fields plus `topic`, `offset` and `timestamp`. */
export interface SignalboxEvent {
  /** The event's type, set by its publisher (e.g. `progress_update`). */
  type: string;
  /** The topic it was published to. */
  topic: string;
  /** Its per-topic offset (1, 2, 3, … within one epoch). */
  offset: number;
  /** RFC 3339 UTC, set by the gateway when the publisher gave none. */
  timestamp?: string;
  /** `true` on the topic's retained state sent after a fresh subscribe. */
  retained?: boolean;
  /** The publisher's other fields. */
  [field: string]: unknown;
}

/** Where a topic stands: its last offset and the epoch of its offset sequence. */
export interface Position {
  /** The last offset (0 for a topic with no events). */
  offset: number;
  /** The epoch the offsets belong to (they compare only within one epoch). */
  epoch: string;
}

/** The `subscribed` notice, sent after every (re)subscribe. */
export interface SubscribedInfo extends Position {
  /** The topic. */
  topic: string;
  /** `true` when a resume replayed everything missed; `false` on a fresh subscribe or when events were lost. */
  recovered: boolean;
}

/** The `resync` notice: a resume could not recover the missed events. */
export interface ResyncInfo extends Position {
  /** The topic. */
  topic: string;
  /** The topic's retained state (its last retained event), or `null` when it has none. */
  state: SignalboxEvent | null;
}

/** A topic's presence (`presence` action). */
export interface PresenceInfo {
  /** The topic. */
  topic: string;
  /** Distinct user ids subscribed to it. */
  users: string[];
  /** Number of subscribed connections. */
  connections: number;
}

/** A `join` or `leave` (namespaces with `join_leave = true`). */
export interface PresenceChange {
  /** `join` or `leave`. */
  type: "join" | "leave";
  /** The topic. */
  topic: string;
  /** The user who joined or left. */
  userId: string;
  /** Their connection. */
  connectionId: string;
}

/** A subscription filter (SPEC §5), e.g. `{ category: "electronics", discount: { gte: 20 } }`. */
export type Filters = Record<string, unknown>;

/** Any reply frame of the gateway. */
export interface Reply {
  /** The reply's type (`subscribed`, `accepted`, `pong`, …). */
  type: string;
  /** The `requestId` of the message it answers. */
  requestId?: string;
  /** The reply's other fields. */
  [field: string]: unknown;
}

/** A parsed JSON object frame. */
export type Frame = Record<string, unknown>;

const TOPIC = /^[A-Za-z0-9_\-:.@/=]{1,256}$/;

/** Returns `topic` if it is a valid topic (SPEC §1), else throws `VALIDATION_ERROR`. */
export function checkTopic(topic: unknown): string {
  if (typeof topic !== "string" || !TOPIC.test(topic)) {
    throw new SignalboxError(
      ClientErrorCode.Validation,
      `invalid topic ${JSON.stringify(topic)}: 1 to 256 characters from [A-Za-z0-9_-:.@/=]`,
    );
  }
  return topic;
}

/** Whether `value` is a plain JSON object (not an array, not null). */
export function isObject(value: unknown): value is Frame {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Whether a frame is a delivered event (replies carry a `requestId`; events a numeric `offset`). */
export function isEvent(frame: Frame): frame is SignalboxEvent {
  return typeof frame.offset === "number" && typeof frame.topic === "string" && typeof frame.type === "string";
}

/** Reads a position from a `subscribed` or `status` reply. */
export function positionOf(frame: Frame): Position {
  return {
    offset: typeof frame.offset === "number" ? frame.offset : 0,
    epoch: typeof frame.epoch === "string" ? frame.epoch : "",
  };
}
