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
import { Metrics } from '../lib/server/metrics.js';
import { TopLogprobs, stringifyResponse } from '../lib/server/logprobs.js';
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

/**
 * text_offset never decreases, stays within the text, and points at each whole-character token's own text (except
 * after bytes that decode to U+FFFD, where it points at that character: the random test model makes invalid UTF-8).
 */
function expectOffsetsIndexText(text: string, logprobs: { tokens: string[]; text_offset: number[] }): void {
  expect(logprobs.text_offset).toHaveLength(logprobs.tokens.length);
  for (const [i, offset] of logprobs.text_offset.entries()) {
    expect(offset).toBeLessThanOrEqual(text.length);
    if (i > 0) expect(offset).toBeGreaterThanOrEqual(logprobs.text_offset[i - 1]);
    const token = logprobs.tokens[i];
    if (token && !token.includes('\uFFFD') && text[offset] !== '\uFFFD') expect(text.slice(offset, offset + token.length)).toBe(token);
  }
}

describe('OpenAI-compatible server', () => {
  it('answers /health, /v1/models and /metrics', async () => {
    expect(await (await fetch(`${base}/health`)).json()).toEqual({ status: 'ok' });
    const models = await (await fetch(`${base}/v1/models`)).json();
    expect(models.data.map((m: { id: string }) => m.id)).toEqual(['tiny']);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toContain('# TYPE w4a8_running_requests gauge');
    expect(metrics).toMatch(/\nw4a8_starting_requests 0\n/);
    expect(metrics).toMatch(/\nw4a8_queued_requests 0\n/);
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

  it('reports the finish reason and token counts the same way streamed and not (EOS not counted, as it is not returned)', async () => {
    const chat = (fields: object) => ({ messages: [{ role: 'user', content: 'Hello' }], temperature: 0, ...fields });
    for (const [route, body] of [
      ['/v1/completions', { prompt: 'Hello', max_tokens: 12, temperature: 0 }], // 'length'
      ['/v1/completions', { prompt: 'Hello', max_tokens: 30, temperature: 1.5, seed: 3 }], // sampled: may meet EOS
      ['/v1/chat/completions', chat({})], // chat's default max_tokens (512), cut to what fits the 96-token context
    ] as const) {
      const plain = (await post(route, body)).json();
      const choice = plain.choices[0];
      expect(plain.usage.completion_tokens).toBe(choice.token_ids.length);
      const data = events((await post(route, { ...body, stream: true, stream_options: { include_usage: true } })).text);
      expect(data.at(-1)).toBe('[DONE]');
      const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
      const last = chunks.at(-1);
      expect(last.choices).toEqual([]);
      expect(last.usage).toEqual(plain.usage);
      const ids = chunks.slice(0, -1).flatMap((c) => c.choices[0].token_ids ?? []);
      expect([chunks.at(-2).choices[0].finish_reason, ids]).toEqual([choice.finish_reason, choice.token_ids]);
      if (choice.finish_reason === 'length' && route.includes('chat')) expect(plain.usage.total_tokens).toBe(96);
    }
    // An explicit max_tokens that does not fit beside the prompt is refused, as OpenAI does.
    const r = await post('/v1/completions', { prompt: 'Hello', max_tokens: 91 });
    expect([r.status, r.json().error.code]).toEqual([400, 'context_length_exceeded']);
    expect((await post('/v1/completions', { prompt: 'Hello', max_tokens: 90 })).status).toBe(200);
  });

  it('takes presence/frequency penalties and logit_bias, and refuses OpenAI fields it does not implement', async () => {
    const greedy = (await post('/v1/completions', { prompt: 'Hello', max_tokens: 4, temperature: 0 })).json().choices[0].token_ids;
    const banned = (await post('/v1/completions', { prompt: 'Hello', max_tokens: 4, temperature: 0, logit_bias: { [greedy[0]]: -100 } })).json();
    expect(banned.choices[0].token_ids[0]).not.toBe(greedy[0]);
    const penalized = await post('/v1/completions', { prompt: 'Hello', max_tokens: 8, presence_penalty: 1.5, frequency_penalty: 0.5, seed: 1 });
    expect(penalized.status).toBe(200);
    const cases: [string, object, string][] = [
      ['/v1/chat/completions', { echo: true }, "'echo'"],
      ['/v1/completions', { echo: 'yes' }, "'echo'"],
      ['/v1/completions', { max_tokens: 0 }, "'max_tokens'"],
      ['/v1/completions', { logprobs: 21 }, "'logprobs'"],
      ['/v1/completions', { top_logprobs: 2 }, "'top_logprobs'"],
      ['/v1/completions', { suffix: 'x' }, "'suffix'"],
      ['/v1/completions', { best_of: 3 }, "'best_of'"],
      ['/v1/completions', { presence_penalty: 'x' }, "'presence_penalty'"],
      ['/v1/completions', { logit_bias: { 5: 101 } }, "'logit_bias'"],
      ['/v1/completions', { logit_bias: { 99999: 1 } }, 'logitBias'],
      ['/v1/completions', { stream_options: { include_usage: 'yes' } }, "'stream_options'"],
      ['/v1/chat/completions', { logprobs: 2 }, "'logprobs'"],
      ['/v1/chat/completions', { top_logprobs: 2 }, "'top_logprobs'"],
      ['/v1/chat/completions', { logprobs: true, top_logprobs: 21 }, "'top_logprobs'"],
      ['/v1/chat/completions', { response_format: { type: 'json_object' } }, "'response_format'"],
      ['/v1/chat/completions', { tools: [{ type: 'function', function: { name: 'f' } }] }, "'tools'"],
      ['/v1/chat/completions', { messages: [{ role: 'banana', content: 'hi' }] }, "'messages[0].role'"],
    ];
    for (const [route, fields, message] of cases) {
      const body = route.includes('chat') ? { messages: [{ role: 'user', content: 'hi' }], ...fields } : { prompt: 'Hello', ...fields };
      const res = await post(route, body);
      expect(res.status, JSON.stringify(fields)).toBe(400);
      expect(res.json().error.message).toContain(message);
    }
    // No-op values of those fields pass, and so does content given as text parts.
    const ok = await post('/v1/chat/completions', {
      messages: [{ role: 'system', content: [{ type: 'text', text: 'Be brief.' }] }, { role: 'user', content: 'hi' }],
      max_tokens: 2, echo: false, logprobs: false, tool_choice: 'none', response_format: { type: 'text' }, stream: null,
    });
    expect(ok.status).toBe(200);
  });

  it('returns log probabilities in OpenAI\'s shapes, streamed or not, as the library computes them', async () => {
    const want = await model.complete(model.tokenize('Hello'), { maxTokens: 6, temperature: 0, logprobs: 3 });
    expect(want.logprobs).toHaveLength(want.tokenIds.length);
    for (const lp of want.logprobs!) {
      expect(lp.top).toHaveLength(3);
      expect(lp.logprob).toBeLessThanOrEqual(0);
      expect(lp.top[0]).toEqual({ id: lp.id, logprob: lp.logprob }); // greedy: the most likely token
      expect(lp.top[1].logprob).toBeLessThanOrEqual(lp.top[0].logprob);
    }
    const text = (id: number) => model.detokenize([id]);
    const body = { prompt: 'Hello', max_tokens: 6, temperature: 0, logprobs: 3 };
    const plain = (await post('/v1/completions', body)).json().choices[0];
    expect(plain.token_ids).toEqual(want.tokenIds);
    expect(plain.logprobs.tokens).toEqual(want.tokenIds.map(text));
    expect(plain.logprobs.token_logprobs).toEqual(want.logprobs!.map((lp) => lp.logprob));
    expect(plain.logprobs.top_logprobs[0]).toEqual(Object.fromEntries(want.logprobs![0].top.map((t) => [text(t.id), t.logprob])));
    expectOffsetsIndexText(plain.text, plain.logprobs);
    const streamed = events((await post('/v1/completions', { ...body, stream: true })).text).filter((e) => e !== '[DONE]')
      .map((e) => JSON.parse(e).choices[0].logprobs).filter(Boolean);
    expect(streamed.flatMap((l) => l.tokens)).toEqual(plain.logprobs.tokens);
    expect(streamed.flatMap((l) => l.text_offset)).toEqual(plain.logprobs.text_offset);
    // Chat: {content: [{token, logprob, bytes, top_logprobs}]}; none unless asked.
    const chatBody = { messages: [{ role: 'user', content: 'hi' }], max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 2 };
    const chat = (await post('/v1/chat/completions', chatBody)).json().choices[0];
    expect(chat.logprobs.content).toHaveLength(chat.token_ids.length);
    for (const [i, entry] of chat.logprobs.content.entries()) {
      expect(entry.token).toBe(text(chat.token_ids[i]));
      expect(entry.bytes).toEqual(Array.from(model.tokenizer!.tokenBytes(chat.token_ids[i]))); // (raw: one byte a token here)
      expect(entry.top_logprobs).toHaveLength(2);
      expect(entry.top_logprobs[0].logprob).toBe(entry.logprob);
    }
    // The tokens' bytes are the text's: decoded together they give the message (U+FFFD where the bytes are invalid).
    expect(new TextDecoder().decode(Uint8Array.from(chat.logprobs.content.flatMap((e: { bytes: number[] }) => e.bytes)))).toBe(chat.message.content);
    const chatStream = events((await post('/v1/chat/completions', { ...chatBody, stream: true })).text).filter((e) => e !== '[DONE]')
      .map((e) => JSON.parse(e).choices[0].logprobs).filter(Boolean);
    expect(chatStream.flatMap((l) => l.content)).toEqual(chat.logprobs.content);
    expect((await post('/v1/chat/completions', { ...chatBody, logprobs: false, top_logprobs: undefined })).json().choices[0].logprobs).toBeNull();
  });

  it('generates n choices in one batch: choice i is the request with seed + i, streamed per index or not', async () => {
    const body = { prompt: 'Hello', max_tokens: 6, temperature: 1, seed: 5 };
    const three = (await post('/v1/completions', { ...body, n: 3 })).json();
    expect(three.choices.map((c: { index: number }) => c.index)).toEqual([0, 1, 2]);
    for (const i of [0, 2]) {
      const alone = (await post('/v1/completions', { ...body, seed: 5 + i })).json().choices[0];
      expect([three.choices[i].text, three.choices[i].token_ids]).toEqual([alone.text, alone.token_ids]);
    }
    expect(three.usage.completion_tokens).toBe(three.choices.reduce((n: number, c: { token_ids: number[] }) => n + c.token_ids.length, 0));
    expect(three.usage.prompt_tokens).toBe(model.tokenize('Hello').length);
    // Streamed chat: every event names its choice, each choice ends with its own finish event.
    const chatBody = { messages: [{ role: 'user', content: 'hi' }], max_tokens: 5, temperature: 1, seed: 9, n: 2 };
    const plain = (await post('/v1/chat/completions', chatBody)).json().choices;
    const streamed = events((await post('/v1/chat/completions', { ...chatBody, stream: true })).text).filter((e) => e !== '[DONE]')
      .map((e) => JSON.parse(e).choices[0]);
    for (const index of [0, 1]) {
      const mine = streamed.filter((c) => c.index === index);
      expect(mine.map((c) => c.delta.content ?? '').join('')).toBe(plain[index].message.content);
      expect(mine.filter((c) => c.finish_reason !== null)).toHaveLength(1);
    }
    expect((await post('/v1/completions', { ...body, n: 17 })).status).toBe(400);
  });

  it('writes top_logprobs most likely first, integer-like texts too, and a repeated text once (its first value)', () => {
    const text = (id: number) => ['b', '7', 'b', 'a'][id];
    const top = new TopLogprobs([{ id: 0, logprob: -1 }, { id: 1, logprob: -2 }, { id: 2, logprob: -3 }, { id: 3, logprob: -4 }], text);
    expect(stringifyResponse({ choices: [{ logprobs: { top_logprobs: [null, top] } }], n: 1 }))
      .toBe('{"choices":[{"logprobs":{"top_logprobs":[null,{"b":-1,"7":-2,"a":-4}]}}],"n":1}');
    expect(JSON.stringify({ '7': 1, b: 2 })).toBe('{"7":1,"b":2}'); // (why: a plain object puts "7" first whatever the order)
    expect(JSON.stringify({ b: 2, '7': 1 })).toBe('{"7":1,"b":2}');
  });

  it('echoes the prompt (completions), with its log probabilities when asked: max_tokens 0 scores a prompt', async () => {
    const ids = model.tokenize('Hello there, world');
    const scored = await model.complete(ids, { maxTokens: 0, promptLogprobs: 2 });
    expect(scored.tokenIds).toEqual([]);
    const text = (id: number) => model.detokenize([id]);
    const only = (await post('/v1/completions', { prompt: 'Hello there, world', max_tokens: 0, echo: true, logprobs: 2 })).json();
    const lp = only.choices[0].logprobs;
    expect(only.choices[0].text).toBe('Hello there, world');
    expect(lp.tokens).toEqual(ids.map(text));
    expect(lp.token_logprobs).toEqual([null, ...scored.promptLogprobs!.map((p) => p.logprob)]);
    expect(lp.top_logprobs[0]).toBeNull();
    expect(lp.top_logprobs[1]).toEqual(Object.fromEntries(scored.promptLogprobs![0].top.map((t) => [text(t.id), t.logprob])));
    expect(only.usage).toMatchObject({ prompt_tokens: ids.length, completion_tokens: 0 });
    // With a completion: the prompt's entries, then the completion's, whose text_offset starts after the echoed text.
    const body = { prompt: 'Hello there, world', max_tokens: 3, temperature: 0, echo: true, logprobs: 1 };
    const both = (await post('/v1/completions', body)).json().choices[0];
    const alone = (await post('/v1/completions', { ...body, echo: false })).json().choices[0];
    expect(both.text).toBe('Hello there, world' + alone.text);
    expect(both.logprobs.tokens).toEqual([...ids.map(text), ...alone.logprobs.tokens]);
    expect(both.logprobs.text_offset.slice(ids.length)).toEqual(alone.logprobs.text_offset.map((o: number) => o + 'Hello there, world'.length));
    expectOffsetsIndexText(both.text, both.logprobs);
    // Multi-byte characters: a token that is part of one decodes to U+FFFD alone; offsets still never decrease, and
    // top_logprobs keeps the first (most likely) value of texts that repeat, most likely first.
    const wide = (await post('/v1/completions', { prompt: 'Café — 東京 😀 naïve', max_tokens: 6, temperature: 0, echo: true, logprobs: 20 })).json().choices[0];
    expectOffsetsIndexText(wide.text, wide.logprobs);
    const wideLength = model.tokenize('Café — 東京 😀 naïve').length;
    for (const [i, top] of wide.logprobs.top_logprobs.entries()) {
      if (i < wideLength) continue; // (the prompt's tokens are not its most likely)
      const token = wide.logprobs.tokens[i];
      // (greedy: a generated token is its step's most likely, which the first of its text's repeats holds)
      if (top[token] !== undefined) expect(top[token]).toBe(Math.max(...(Object.values(top) as number[])));
    }
    // Streamed: the echo event first, then the completion's.
    const streamed = events((await post('/v1/completions', { ...body, stream: true })).text).filter((e) => e !== '[DONE]')
      .map((e) => JSON.parse(e).choices[0]);
    expect(streamed[0].text).toBe('Hello there, world');
    expect(streamed.map((c) => c.text).join('')).toBe(both.text);
    expect(streamed.flatMap((c) => c.logprobs?.tokens ?? [])).toEqual(both.logprobs.tokens);
    expect(streamed.flatMap((c) => c.logprobs?.text_offset ?? [])).toEqual(both.logprobs.text_offset);
    // echo without log probabilities: the text alone (max_tokens 0: the model is not run).
    const plain = (await post('/v1/completions', { prompt: 'Hello there, world', max_tokens: 0, echo: true })).json();
    expect([plain.choices[0].text, plain.choices[0].logprobs, plain.usage.completion_tokens]).toEqual(['Hello there, world', null, 0]);
    // The same checks with and without log probabilities: ids in the vocabulary, a prompt the context holds (it may
    // fill it: nothing is generated).
    for (const logprobs of [undefined, 1]) {
      expect((await post('/v1/completions', { prompt: [256, 99999], max_tokens: 0, echo: true, logprobs })).status).toBe(400);
      expect((await post('/v1/completions', { prompt: new Array(97).fill(65), max_tokens: 0, echo: true, logprobs })).json().error.code)
        .toBe('context_length_exceeded');
      expect((await post('/v1/completions', { prompt: new Array(96).fill(65), max_tokens: 0, echo: true, logprobs })).status).toBe(200);
    }
    const plainStream = events((await post('/v1/completions', { prompt: [256, 72, 105], max_tokens: 2, echo: true, stream: true })).text);
    expect(JSON.parse(plainStream[0]).choices[0].text).toBe(model.detokenize([256, 72, 105]));
  });

  it("answers 400 when the chat template raises on the messages, and refuses text too long for the context before tokenizing it", async () => {
    const raising = W4a8Model.fromPacked({ ...packed, chatTemplate: "{{ raise_exception('roles must alternate') }}" });
    const errors: unknown[] = [];
    const other = createServer(raising, { modelName: 'tiny', logError: (e) => errors.push(e) });
    const at = await listen(other);
    try {
      const r = await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }] }, at);
      expect([r.status, r.json().error.message]).toEqual([400, expect.stringContaining('roles must alternate')]);
      const long = 'x'.repeat(2 * 96 * raising.tokenizer!.maxTokenChars + 65);
      const started = performance.now();
      const tooLong = await post('/v1/completions', { prompt: long }, at);
      expect([tooLong.status, tooLong.json().error.code]).toEqual([400, 'context_length_exceeded']);
      expect(performance.now() - started).toBeLessThan(1000);
      expect(errors).toEqual([]); // the client's faults, not logged as the server's
    } finally {
      await new Promise((resolve) => other.close(resolve));
      await raising.dispose();
    }
  });

  it('answers HEAD, OPTIONS and wrong methods per route, GET /v1/models/{id}, and 413 for a chunked body over the limit', async () => {
    expect((await fetch(`${base}/health`, { method: 'HEAD' })).status).toBe(200);
    const options = await fetch(`${base}/v1/completions`, { method: 'OPTIONS' });
    expect([options.status, options.headers.get('allow')]).toEqual([204, 'POST, OPTIONS']);
    const put = await fetch(`${base}/health`, { method: 'PUT' });
    expect([put.status, put.headers.get('allow')]).toEqual([405, 'GET, HEAD, OPTIONS']);
    expect(await (await fetch(`${base}/v1/models/tiny`)).json()).toMatchObject({ id: 'tiny', object: 'model' });
    expect((await fetch(`${base}/v1/models/other`)).status).toBe(404);
    expect((await fetch(`${base}/v1/models/%`)).status).toBe(404); // not percent-encoding: no such model (was a 500)
    // A chunked body has no Content-Length: the limit is found while reading, and the client, still sending, gets
    // the 413 (not a reset: the rest is read and dropped), on a connection it can use again.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(`${base}/v1/completions`, { agent, method: 'POST', headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' } },
        (res) => { res.resume(); res.on('end', () => resolve(res.statusCode!)); });
      req.on('error', reject);
      let sent = 0;
      const more = () => {
        while (sent < 40 && req.write('x'.repeat(1000))) sent++;
        if (sent < 40) req.once('drain', () => { sent++; more(); });
        else req.end();
      };
      more();
    });
    expect(status).toBe(413);
    const again = await new Promise<number>((resolve, reject) => {
      http.get(`${base}/health`, { agent }, (res) => { res.resume(); resolve(res.statusCode!); }).on('error', reject);
    });
    expect(again).toBe(200);
    agent.destroy();
  });

  it('does not count a client that leaves while sending its body as a server error', async () => {
    const logged: unknown[] = [];
    const other = createServer(model, { modelName: 'tiny', logError: (e) => logged.push(e) });
    const at = await listen(other);
    try {
      await new Promise<void>((resolve) => {
        const req = http.request(`${at}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': '100' } });
        req.on('error', () => resolve());
        req.write('{"prompt": "Hel');
        setTimeout(() => { req.destroy(); resolve(); }, 50);
      });
      await new Promise((r) => setTimeout(r, 100));
      expect(logged).toEqual([]);
      expect(await (await fetch(`${at}/metrics`)).text()).not.toContain('status="500"');
    } finally {
      await new Promise((resolve) => other.close(resolve));
    }
  });

  it('ends a stream whose generation fails midway with an error event (OpenAI clients raise it)', async () => {
    // Every embedding row but the prompt's is NaN: the first token comes from the prompt, the step after it fails.
    const prompt = [256, 72, 101];
    const embed = packed.tensors.get('model.embed_tokens.weight')!;
    const data = (embed.data as Uint16Array).map((v, i) => (prompt.includes(Math.floor(i / packed.config.dim)) ? v : 0x7fc0));
    const broken = W4a8Model.fromPacked({ ...packed, tensors: new Map(packed.tensors).set('model.embed_tokens.weight', { ...embed, data }) });
    const logged: unknown[] = [];
    const other = createServer(broken, { modelName: 'tiny', logError: (e) => logged.push(e) });
    const at = await listen(other);
    try {
      const r = await post('/v1/completions', { prompt, max_tokens: 20, temperature: 0, stream: true }, at);
      expect(r.status).toBe(200);
      const data = events(r.text);
      expect(JSON.parse(data[0]).choices[0].token_ids).toHaveLength(1);
      expect(JSON.parse(data.at(-1)!).error.message).toContain('non-finite logit');
      expect(logged).toHaveLength(1); // the server's fault (500): reported
    } finally {
      await new Promise((resolve) => other.close(resolve));
      await broken.dispose();
    }
  });

  it('keeps Prometheus summary counts and sums over every request (the quantiles over the last 1000)', () => {
    const m = new Metrics();
    for (let i = 0; i < 1005; i++) m.observe('t_seconds', 'test', 1);
    const text = m.render({});
    expect(text).toContain('t_seconds_count 1005');
    expect(text).toContain('t_seconds_sum 1005');
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

  it("close() (SIGTERM) ends a stream in flight with an error event before it closes the connections", async () => {
    const file = path.join(tempDir('w4a8-serve-'), 'tiny.w4a8');
    await writePackedModel(file, packed);
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    try {
      const running = await startServer([file, '--port', '0', '--name', 'tiny']);
      const res = await fetch(`${running.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt: 'Once', max_tokens: 90, stream: true }) });
      const closed = running.close(); // as soon as the stream has started (90 tokens would take many more steps)
      const text = await res.text();
      await closed;
      expect(JSON.parse(events(text).at(-1)!).error.message).toContain('disposed');
    } finally {
      log.mockRestore();
    }
  });
});
