/**
 * Requests watching one AbortSignal share a single 'abort' listener on it: a server may pass one long-lived signal
 * to every request, and Node warns (MaxListenersExceededWarning) past 10 listeners on an EventTarget.
 */
interface Watch {
  listener: () => void;
  callbacks: Set<() => void>;
}

const watches = new WeakMap<AbortSignal, Watch>();

/**
 * Calls `callback` once when `signal` aborts (at once, in a microtask, when it already has); returns the function
 * that stops watching (removing the listener with the last watcher). One function watched twice is one watcher.
 */
export function watchAbort(signal: AbortSignal, callback: () => void): () => void {
  if (signal.aborted) {
    queueMicrotask(callback);
    return () => {};
  }
  let watch = watches.get(signal);
  if (!watch) {
    const callbacks = new Set<() => void>();
    const listener = () => {
      watches.delete(signal);
      // Each watcher's own: one that throws must not keep the others from hearing of the abort.
      for (const call of callbacks)
        try {
          call();
        } catch (error) {
          queueMicrotask(() => { throw error; });
        }
    };
    watch = { listener, callbacks };
    watches.set(signal, watch);
    signal.addEventListener('abort', listener, { once: true });
  }
  const { callbacks, listener } = watch;
  callbacks.add(callback);
  return () => {
    if (!callbacks.delete(callback) || callbacks.size > 0) return;
    signal.removeEventListener('abort', listener);
    if (watches.get(signal)?.callbacks === callbacks) watches.delete(signal);
  };
}
