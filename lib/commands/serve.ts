/** `w4a8 serve <model.w4a8> [--port 8080] [--host 127.0.0.1]`: the OpenAI-compatible HTTP server. */
import type { ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { W4a8Error } from '../errors.js';
import { W4a8Model } from '../model/model.js';
import { createServer } from '../server/server.js';
import { DEFAULT_KV_CACHE, KV_CACHE_TYPES } from '../model/types.js';
import { choice, numberOption, parseCommandArgs } from './generate.js';

export const SERVE_USAGE = `w4a8 serve <model.w4a8> [--port 8080] [--host 127.0.0.1] [--name w4a8]
  [--max-batch 32] [--context N] [--max-queue 1024] [--kv-cache bf16|f32]`;

export interface RunningServer {
  /** http://host:port with the port the server is bound to (the OS picks one for --port 0). */
  url: string;
  port: number;
  /** Stops listening, aborts the generations in flight (the model is disposed) and closes every connection. */
  close(): Promise<void>;
}

/** How long close() lets responses in flight end before it closes their connections. */
const SHUTDOWN_GRACE_MS = 2000;

/** Loads the model and starts listening; prints the address the server is actually bound to. */
export async function startServer(args: string[]): Promise<RunningServer> {
  const { values, positionals } = parseCommandArgs({
    args, allowPositionals: true,
    options: {
      port: { type: 'string' }, host: { type: 'string' }, name: { type: 'string' }, 'max-batch': { type: 'string' },
      context: { type: 'string' }, 'max-queue': { type: 'string' }, 'kv-cache': { type: 'string' },
    },
  }, SERVE_USAGE);
  if (!positionals[0]) throw new W4a8Error('E_OPTION', `a model path is required\n${SERVE_USAGE}`);
  const port = numberOption(values.port, 'port', 8080, true);
  if (port < 0 || port > 65535) throw new W4a8Error('E_OPTION', `--port must be in [0, 65535] (0: any free port), got ${port}`);
  const host = values.host ?? '127.0.0.1';
  const model = await W4a8Model.load(positionals[0], {
    maxBatch: numberOption(values['max-batch'], 'max-batch', 32, true),
    contextLength: values.context === undefined ? undefined : numberOption(values.context, 'context', 0, true),
    maxQueue: numberOption(values['max-queue'], 'max-queue', 1024, true),
    kvCache: choice(values['kv-cache'], KV_CACHE_TYPES, '--kv-cache', DEFAULT_KV_CACHE),
  });
  const server = createServer(model, { modelName: values.name ?? 'w4a8' });
  // Responses in flight, so that closing lets each end (a stream with its error event) before connections go.
  const open = new Set<ServerResponse>();
  server.on('request', (_req, res: ServerResponse) => {
    open.add(res);
    res.on('close', () => open.delete(res));
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => { server.off('error', reject); resolve(); });
    });
  } catch (error) {
    await model.dispose();
    throw new W4a8Error('E_OPTION', `cannot listen on ${host}:${port}: ${(error as Error).message}`);
  }
  const bound = (server.address() as AddressInfo).port;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${bound}`;
  console.log(`w4a8 serving ${positionals[0]} as '${values.name ?? 'w4a8'}' on ${url} (POST /v1/completions, /v1/chat/completions)`);
  let closing: Promise<void> | undefined;
  return {
    url, port: bound,
    close: () => closing ??= (async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      await model.dispose(); // generations in flight fail with E_DISPOSED: streams end with an error event
      const deadline = Date.now() + SHUTDOWN_GRACE_MS;
      while (open.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
      server.closeAllConnections();
      await closed;
    })(),
  };
}

export async function serveCommand(args: string[]): Promise<void> {
  const running = await startServer(args);
  const stop = () => {
    console.log('shutting down');
    void running.close();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
