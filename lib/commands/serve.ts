/** `w4a8 serve <model.w4a8> [--port 8080] [--host 127.0.0.1]`: the OpenAI-compatible HTTP server. */
import { parseArgs } from 'node:util';
import { W4a8Error } from '../errors.js';
import { W4a8Model } from '../model/model.js';
import { createServer } from '../server/server.js';
import { numberOption } from './generate.js';

export const SERVE_USAGE = `w4a8 serve <model.w4a8> [--port 8080] [--host 127.0.0.1] [--name w4a8]
  [--max-batch 32] [--context N] [--max-queue 1024]`;

export async function serveCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args, allowPositionals: true,
    options: {
      port: { type: 'string' }, host: { type: 'string' }, name: { type: 'string' }, 'max-batch': { type: 'string' },
      context: { type: 'string' }, 'max-queue': { type: 'string' },
    },
  });
  if (!positionals[0]) throw new W4a8Error('E_OPTION', `a model path is required\n${SERVE_USAGE}`);
  const model = await W4a8Model.load(positionals[0], {
    maxBatch: numberOption(values['max-batch'], 'max-batch', 32, true),
    contextLength: values.context === undefined ? undefined : numberOption(values.context, 'context', 0, true),
    maxQueue: numberOption(values['max-queue'], 'max-queue', 1024, true),
  });
  const server = createServer(model, { modelName: values.name ?? 'w4a8' });
  const port = numberOption(values.port, 'port', 8080, true);
  const host = values.host ?? '127.0.0.1';
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  console.log(`w4a8 serving ${positionals[0]} as '${values.name ?? 'w4a8'}' on http://${host}:${port} (POST /v1/completions, /v1/chat/completions)`);
  const stop = () => {
    console.log('shutting down');
    server.close();
    void model.dispose();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
