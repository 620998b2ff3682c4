/**
 * Requests watching one AbortSignal share a single 'abort' listener on it: a server may pass one long-lived signal
 * to every request, and Node warns (MaxListenersExceededWarning) past 10 listeners on an EventTarget.
 */
interface Watch {
  listener: () => void;
  callbacks: Set<() => void>;
}

const watches = new WeakMap<AbortSignal, Watch>();

/** Calls `callback` once when `signal` aborts; returns the function that stops watching (removing the listener with the last). */
export function watchAbort(signal: AbortSignal, callback: () => void): () => void {
  let watch = watches.get(signal);
  if (!watch) {
    const callbacks = new Set<() => void>();
    const listener = () => {
      watches.delete(signal);
      for (const call of callbacks) call();
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
