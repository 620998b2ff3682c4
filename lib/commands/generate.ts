/**
 * `w4a8 generate [model.w4a8] [prompt]`: streams the continuation of a prompt (or of --batch copies
 * of it, decoded together with different seeds) and prints tokens/s at the end. Without a model it
 * uses the project's own trained model (models/default/model.w4a8).
 */
import { existsSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { defaultModelFile } from '../default-model.js';
import { W4a8Error } from '../errors.js';
import { W4a8Model, type GenerateOptions } from '../model/model.js';
import { DEFAULT_KV_CACHE, KV_CACHE_TYPES } from '../model/types.js';

export const GENERATE_USAGE = `w4a8 generate [model.w4a8] [prompt] [options]
  model.w4a8           a packed model (or --model FILE); the first argument is taken as the model when
                       it names an existing file or ends in .w4a8, else as the prompt; default: the
                       project's own model, models/default/model.w4a8
  --batch N            decode N copies of the prompt in one batch (seeds seed..seed+N-1)
  --max-tokens N       tokens to generate (default 128)
  --temperature T      0 = greedy (default 0.8); --top-k, --top-p, --min-p, --repeat-penalty
  --seed S             sampling seed (default 1)
  --tokens 1,2,3       the prompt as token ids (models without a tokenizer)
  --chat               wrap the prompt as a user message in the model's chat template
  --context N          context length (default: the model's)
  --kv-cache bf16|f32  KV cache elements (default bf16; f32: twice the memory per token, attention as the FP32
                       reference computes it)`;

export function numberOption(value: string | undefined, name: string, fallback: number, integer = false): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  // (Number('') is 0: an empty value is no number)
  if (value.trim() === '' || !Number.isFinite(n) || (integer && !Number.isInteger(n)))
    throw new W4a8Error('E_OPTION', `--${name} must be ${integer ? 'an integer' : 'a number'}, got '${value}'`);
  return n;
}

/** parseArgs, with its errors (unknown flag, missing value...) as E_OPTION and the command's usage. */
export function parseCommandArgs<T extends ParseArgsConfig>(config: T, usage: string): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (error) {
    throw new W4a8Error('E_OPTION', `${(error as Error).message}\n${usage}`);
  }
}

/** A command-line value that must be one of `choices` (E_GROUP for --group, else E_OPTION). */
export function choice<T extends string>(value: string | undefined, choices: readonly T[], name: string, fallback: T): T {
  if (value === undefined) return fallback;
  if ((choices as readonly string[]).includes(value)) return value as T;
  throw new W4a8Error(name === '--group' ? 'E_GROUP' : 'E_OPTION', `${name} must be one of ${choices.join(', ')}, got '${value}'`);
}

/** Splits the positionals into the model (named, first positional that looks like one, or the default) and the prompt. */
function modelAndPrompt(named: string | undefined, positionals: string[]): { path: string; prompt?: string } {
  if (positionals.length > (named === undefined ? 2 : 1))
    throw new W4a8Error('E_OPTION', `too many arguments (quote the prompt)\n${GENERATE_USAGE}`);
  if (named !== undefined) return { path: named, prompt: positionals[0] };
  const [first, second] = positionals;
  if (first !== undefined && (first.endsWith('.w4a8') || existsSync(first))) return { path: first, prompt: second };
  if (second !== undefined) throw new W4a8Error('E_IO', `model file not found: ${first}`);
  return { path: defaultModelFile(), prompt: first };
}

export async function generateCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseCommandArgs({
    args, allowPositionals: true,
    options: {
      batch: { type: 'string' }, 'max-tokens': { type: 'string' }, temperature: { type: 'string' }, seed: { type: 'string' },
      'top-k': { type: 'string' }, 'top-p': { type: 'string' }, 'min-p': { type: 'string' }, 'repeat-penalty': { type: 'string' },
      tokens: { type: 'string' }, chat: { type: 'boolean' }, context: { type: 'string' }, model: { type: 'string' },
      'kv-cache': { type: 'string' },
    },
  }, GENERATE_USAGE);
  const { path, prompt } = modelAndPrompt(values.model, positionals);
  const batch = numberOption(values.batch, 'batch', 1, true);
  if (batch < 1) throw new W4a8Error('E_OPTION', `--batch must be at least 1, got ${batch}`);
  const model = await W4a8Model.load(path, {
    contextLength: values.context === undefined ? undefined : numberOption(values.context, 'context', 0, true),
    maxBatch: batch,
    kvCache: choice(values['kv-cache'], KV_CACHE_TYPES, '--kv-cache', DEFAULT_KV_CACHE),
  });
  try {
    const promptIds = values.tokens !== undefined ? values.tokens.split(',').map((t) => numberOption(t.trim(), 'tokens', 0, true)) : undefined;
    const text = prompt ?? (promptIds ? undefined : 'Once upon a time');
    if (values.chat && !promptIds && !model.tokenizer?.hasChatTemplate) throw new W4a8Error('E_OPTION', '--chat needs a model with a chat template');
    const input: string | number[] = promptIds ?? (values.chat ? await model.tokenizeAsync(model.tokenizer!.applyChatTemplate([{ role: 'user', content: text! }]), false) : text!);
    const seed = numberOption(values.seed, 'seed', 1, true);
    const options: GenerateOptions = {
      maxTokens: numberOption(values['max-tokens'], 'max-tokens', 128, true),
      temperature: numberOption(values.temperature, 'temperature', 0.8),
      topK: numberOption(values['top-k'], 'top-k', 40, true),
      topP: numberOption(values['top-p'], 'top-p', 0.95),
      minP: numberOption(values['min-p'], 'min-p', 0.05),
      repetitionPenalty: numberOption(values['repeat-penalty'], 'repeat-penalty', 1),
    };
    const start = performance.now();
    if (batch === 1) {
      let generated = 0;
      if (typeof input === 'string') process.stdout.write(input);
      for await (const chunk of model.stream(input, { ...options, seed })) {
        generated += chunk.tokenIds.length;
        process.stdout.write(model.tokenizer ? chunk.text : `${chunk.tokenIds.join(' ')} `);
      }
      const seconds = (performance.now() - start) / 1000;
      process.stdout.write(`\n\n${generated} tokens in ${seconds.toFixed(2)} s: ${(generated / seconds).toFixed(1)} tokens/s\n`);
      return;
    }
    const results = await Promise.all(Array.from({ length: batch }, (_, i) => model.complete(input, { ...options, seed: seed + i })));
    const seconds = (performance.now() - start) / 1000;
    results.forEach((r, i) => console.log(`--- [${i}] ${r.generatedTokens} tokens (${r.finishReason})\n${model.tokenizer ? r.text : r.tokenIds.join(' ')}`));
    const total = results.reduce((s, r) => s + r.generatedTokens, 0);
    console.log(`\nbatch ${batch}: ${total} tokens in ${seconds.toFixed(2)} s: ${(total / seconds).toFixed(1)} tokens/s in all`);
  } finally {
    await model.dispose();
  }
}
