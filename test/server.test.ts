// The OpenAI-compatible server on a real loopback socket, over the small synthetic model.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startServer } from '../lib/commands/serve.js';
import { writePackedModel } from '../lib/format/index.js';
import { W4a8Model } from '../lib/model/model.js';
import type { PackedModel } from '../lib/model/types.js';
import { syntheticSourceModel } from '../lib/model/synthetic.js';
import { packModel } from '../lib/pack.js';
import { createServer } from '../lib/server/server.js';
import { tempDir } from './fixtures/safetensors-bytes.js';

let packed: PackedModel;
let model: W4a8Model;
let server: http.Server;
let base: string;

async function listen(s: http.Server): Promise<string> {
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
}

beforeAll(async () => {
  const source = syntheticSourceModel({ dim: 64, hiddenDim: 172, nLayers: 2, nHeads: 8, nKvHeads: 4, maxSeqLen: 96 }, 5);
  packed = await packModel(source, { groupSize: 32, weightFormat: 'e4m3fn', scales: 'float', method: 'rtn' });
  model = W4a8Model.fromPacked(packed, { maxBatch: 8 });
  server = createServer(model, { modelName: 'tiny', maxBodyBytes: 4096 });
  base = await listen(server);
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
  await model.dispose();
});

async function post(route: string, body: unknown, at = base) {
  const res = await fetch(at + route, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, text, json: () => JSON.parse(text) };
}

/** The data payloads of a server-sent event stream. */
function events(text: string): string[] {
  return text.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
}

describe('OpenAI-compatible server', () => {
  it('answers /health, /v1/models and /metrics', async () => {
    expect(await (await fetch(`${base}/health`)).json()).toEqual({ status: 'ok' });
    const models = await (await fetch(`${base}/v1/models`)).json();
    expect(models.data.map((m: { id: string }) => m.id)).toEqual(['tiny']);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toContain('# TYPE w4a8_running_requests gauge');
    expect(metrics).toContain('process_resident_memory_bytes');
  });

  it('completes a prompt, and streams the same text as server-sent events', async () => {
    const body = { model: 'tiny', prompt: 'Hello', max_tokens: 12, temperature: 0 };
    const plain = await post('/v1/completions', body);
    expect(plain.status).toBe(200);
    const result = plain.json();
    expect(result.object).toBe('text_completion');
    expect(result.usage).toMatchObject({ prompt_tokens: 6, completion_tokens: 12, total_tokens: 18 });
    const streamed = await post('/v1/completions', { ...body, stream: true });
    expect(streamed.status).toBe(200);
    const data = events(streamed.text);
    expect(data.at(-1)).toBe('[DONE]');
    const text = data.slice(0, -1).map((d) => JSON.parse(d).choices[0].text).join('');
    expect(text).toBe(result.choices[0].text);
    expect((await fetch(`${base}/metrics`).then((r) => r.text()))).toMatch(/w4a8_generated_tokens_total \d+/);
  });

  it('chats through the model template, plain and streamed', async () => {
    const body = { model: 'tiny', messages: [{ role: 'user', content: 'Hi there' }], max_tokens: 8, temperature: 0 };
    const plain = (await post('/v1/chat/completions', body)).json();
    expect(plain.object).toBe('chat.completion');
    expect(plain.choices[0].message.role).toBe('assistant');
    const data = events((await post('/v1/chat/completions', { ...body, stream: true })).text).slice(0, -1).map((d) => JSON.parse(d));
    expect(data[0].choices[0].delta.role).toBe('assistant');
    expect(data.map((d) => d.choices[0].delta.content ?? '').join('')).toBe(plain.choices[0].message.content);
  });

  it('serves concurrent requests from one batch', async () => {
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => post('/v1/completions', { prompt: `Request ${i}`, max_tokens: 10, seed: i })));
    for (const r of results) expect(r.status).toBe(200);
  });

  it('rejects bad requests with clear 4xx errors', async () => {
    const cases: [string, unknown, number, string][] = [
      ['/v1/completions', '{not json', 400, 'not valid JSON'],
      ['/v1/completions', [1, 2], 400, 'JSON object'],
      ['/v1/completions', { prompt: 5 }, 400, "'prompt'"],
      ['/v1/completions', { prompt: 'a', max_tokens: 'ten' }, 400, "'max_tokens'"],
      ['/v1/completions', { prompt: 'a', max_tokens: 100000 }, 400, "'max_tokens'"],
      ['/v1/completions', { prompt: 'a', temperature: -1 }, 400, "'temperature'"],
      ['/v1/completions', { prompt: 'a', stop: [''] }, 400, "'stop'"],
      ['/v1/completions', { prompt: 'a', stream: 'yes' }, 400, "'stream'"],
      ['/v1/completions', { prompt: 'a', model: 'gpt-4' }, 404, "'gpt-4'"],
      ['/v1/completions', { prompt: 'x'.repeat(200) }, 400, 'context'],
      ['/v1/completions', { prompt: 'x'.repeat(5000) }, 413, 'larger than'],
      ['/v1/chat/completions', { messages: [{ role: 'user' }] }, 400, "'messages[0]'"],
      ['/v1/nothing', {}, 404, 'no route'],
    ];
    for (const [route, body, status, message] of cases) {
      const r = await post(route, body);
      expect(r.status, `${JSON.stringify(body).slice(0, 40)}`).toBe(status);
      expect(r.json().error.message).toContain(message);
    }
    expect((await fetch(`${base}/v1/completions`)).status).toBe(405);
  });

  it('aborts the generation when the client disconnects', async () => {
    await new Promise<void>((resolve, reject) => {
      const req = http.request(`${base}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
        res.once('data', () => { req.destroy(); resolve(); });
      });
      req.on('error', () => {});
      req.end(JSON.stringify({ prompt: 'Once', max_tokens: 80, stream: true }));
      setTimeout(() => reject(new Error('no data')), 10_000);
    });
    const deadline = Date.now() + 5000;
    while (model.stats.running > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(model.stats.running).toBe(0);
  });

  it('streams token ids in every event, also for a model without a tokenizer (whose text is empty)', async () => {
    const streamed = events((await post('/v1/completions', { prompt: 'Hello', max_tokens: 6, temperature: 0, stream: true })).text);
    const ids = streamed.slice(0, -1).flatMap((d) => JSON.parse(d).choices[0].token_ids ?? []);
    expect(ids).toHaveLength(6);
    const plain = (await post('/v1/completions', { prompt: 'Hello', max_tokens: 6, temperature: 0 })).json();
    expect(plain.choices[0].token_ids).toEqual(ids);

    const bare = W4a8Model.fromPacked({ ...packed, tokenizerJson: undefined, tokenizerConfigJson: undefined, chatTemplate: undefined });
    const bareServer = createServer(bare, { modelName: 'bare' });
    const at = await listen(bareServer);
    try {
      const prompt = [1, 72, 101, 108, 108, 111];
      const data = events((await post('/v1/completions', { prompt, max_tokens: 5, temperature: 0, stream: true }, at)).text);
      expect(data.at(-1)).toBe('[DONE]');
      const chunks = data.slice(0, -1).map((d) => JSON.parse(d).choices[0]);
      const tokenEvents = chunks.filter((c) => c.finish_reason === null);
      expect(tokenEvents.length).toBeGreaterThanOrEqual(1);
      const streamedIds = tokenEvents.flatMap((c) => c.token_ids);
      expect(streamedIds).toHaveLength(5);
      expect(chunks.at(-1).finish_reason).toBe('length');
      // The same ids as a direct greedy generation, and as the non-streamed answer.
      expect(streamedIds).toEqual((await bare.complete(prompt, { maxTokens: 5, temperature: 0 })).tokenIds);
      const plainBare = (await post('/v1/completions', { prompt, max_tokens: 5, temperature: 0 }, at)).json();
      expect(plainBare.choices[0].token_ids).toEqual(streamedIds);
      expect(plainBare.usage).toMatchObject({ prompt_tokens: 6, completion_tokens: 5 });
      // Text prompts and chat need a tokenizer: a clear 400, not a crash.
      expect((await post('/v1/completions', { prompt: 'Hello' }, at)).status).toBe(400);
      expect((await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'Hi' }] }, at)).status).toBe(400);
    } finally {
      await new Promise((resolve) => bareServer.close(resolve));
      await bare.dispose();
    }
  });

  it('w4a8 serve --port 0 prints and serves on the port the OS picked', async () => {
    const file = path.join(tempDir('w4a8-serve-'), 'tiny.w4a8');
    await writePackedModel(file, packed);
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    let running: Awaited<ReturnType<typeof startServer>> | undefined;
    try {
      running = await startServer([file, '--port', '0', '--host', '127.0.0.1', '--name', 'tiny', '--max-batch', '4']);
      const printed = log.mock.calls.map((c) => String(c[0])).join('\n');
      const port = Number(/http:\/\/127\.0\.0\.1:(\d+)/.exec(printed)?.[1]);
      expect(port).toBeGreaterThan(0);
      expect(port).toBe(running.port);
      expect(running.url).toBe(`http://127.0.0.1:${port}`);
      expect(await (await fetch(`http://127.0.0.1:${port}/health`)).json()).toEqual({ status: 'ok' });
    } finally {
      log.mockRestore();
      await running?.close();
    }
    await expect(startServer([file, '--port', '70000'])).rejects.toMatchObject({ code: 'E_OPTION' });
  });
});
