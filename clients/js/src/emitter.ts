/**
 * A tiny typed event emitter (the package has no runtime dependencies).
 *
 * A listener that throws never breaks the client's state: the error is rethrown on a fresh
 * task, where the platform reports it (the console, `window.onerror`, Node's
 * `uncaughtException`), and the other listeners still run.
 */
export class Emitter<Events extends object> {
  private readonly listeners = new Map<keyof Events, Set<(payload: never) => void>>();

  /** Adds a listener; returns a function that removes it (handy in effect clean-ups). */
  on<K extends keyof Events>(name: K, listener: (payload: Events[K]) => void): () => void {
    let set = this.listeners.get(name);
    if (!set) {
      set = new Set();
      this.listeners.set(name, set);
    }
    set.add(listener as (payload: never) => void);
    return () => this.off(name, listener);
  }

  /** Like `on`, but the listener runs at most once. */
  once<K extends keyof Events>(name: K, listener: (payload: Events[K]) => void): () => void {
    const off = this.on(name, (payload) => {
      off();
      listener(payload);
    });
    return off;
  }

  /** Removes a listener added with `on`. */
  off<K extends keyof Events>(name: K, listener: (payload: Events[K]) => void): void {
    this.listeners.get(name)?.delete(listener as (payload: never) => void);
  }

  /** Whether anything listens to `name`. */
  protected hasListeners(name: keyof Events): boolean {
    return (this.listeners.get(name)?.size ?? 0) > 0;
  }

  /** Calls every listener of `name` with `payload`. */
  protected emit<K extends keyof Events>(name: K, payload: Events[K]): void {
    const set = this.listeners.get(name);
    if (!set) return;
    for (const listener of [...set]) {
      callSafely(listener as (payload: Events[K]) => void, payload);
    }
  }
}

/** Runs application code so that its exception cannot unwind into the client. */
export function callSafely<T>(fn: (value: T) => void, value: T): void {
  try {
    fn(value);
  } catch (err) {
    setTimeout(() => {
      throw err;
    }, 0);
  }
}
