/**
 * Imports a Hugging Face model folder:
 *   config.json                          architecture and sizes (hf-config.ts)
 *   generation_config.json               extra end-of-sequence ids (optional)
 *   model.safetensors                    the weights, or
 *   model.safetensors.index.json         {"weight_map": {"<tensor>": "<shard file>"}} + the shards
 *   tokenizer.json, tokenizer_config.json, chat_template.jinja / chat_template.json   (optional)
 * Every safetensors file is mapped and validated (lib/format); F32 and BF16 tensors stay zero-copy
 * views into the mappings, F16 and F64 are widened (or rounded) to F32 copies. Every tensor the
 * config implies must be there with its shape; a tensor it does not imply is refused (E_UNSUPPORTED:
 * the checkpoint computes something the runtime does not), except RoPE caches (`rotary_emb.inv_freq`)
 * and a tied checkpoint's duplicate lm_head.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { W4a8Error } from '../errors.js';
import { LM_HEAD, sourceTensorCount, sourceTensorShapes } from '../format/layout.js';
import { readSafetensors, storedToFloat32, storedToTensor, type StoredTensor } from '../format/safetensors-read.js';
import type { ModelConfig, SourceModel, Tensor } from '../model/types.js';
import { exists, parseJsonText, readJson, readOptionalText } from './files.js';
import { configFromHuggingFace } from './hf-config.js';

const SINGLE_FILE = 'model.safetensors';
const INDEX_FILE = 'model.safetensors.index.json';

interface Located {
  stored: StoredTensor;
  file: string;
}

export async function importHuggingFace(dir: string): Promise<SourceModel> {
  let info;
  try {
    info = await stat(dir);
  } catch (error) {
    throw new W4a8Error('E_IO', `cannot open '${dir}': ${(error as Error).message}`);
  }
  if (!info.isDirectory()) throw new W4a8Error('E_FILE', `'${dir}' is not a folder (a Hugging Face model is a folder with config.json)`);
  const configPath = path.join(dir, 'config.json');
  if (!(await exists(configPath))) throw new W4a8Error('E_FILE', `${dir}: no config.json (not a Hugging Face model folder?)`);
  const generationPath = path.join(dir, 'generation_config.json');
  const generation = (await exists(generationPath)) ? await readJson(generationPath) : undefined;
  const config = configFromHuggingFace(await readJson(configPath), generation, configPath);

  const stored = await readWeights(dir);
  const tensors = collectTensors(config, stored, dir);
  return { config, tensors, ...(await readTokenizer(dir)) };
}

/** Every tensor of every weight file, by name, checked against the index when there is one. */
async function readWeights(dir: string): Promise<Map<string, Located>> {
  const indexPath = path.join(dir, INDEX_FILE);
  const singlePath = path.join(dir, SINGLE_FILE);
  const located = new Map<string, Located>();
  const add = async (file: string) => {
    const contents = await readSafetensors(file);
    for (const [name, stored] of contents.tensors) {
      const previous = located.get(name);
      if (previous) throw new W4a8Error('E_FILE', `${dir}: tensor '${name}' is in both ${previous.file} and ${file}`);
      located.set(name, { stored, file });
    }
  };
  if (await exists(indexPath)) {
    const weightMap = shardMap(await readJson(indexPath), indexPath);
    for (const shard of new Set(weightMap.values())) await add(path.join(dir, shard));
    for (const [name, shard] of weightMap) {
      const found = located.get(name);
      if (!found || found.file !== path.join(dir, shard))
        throw new W4a8Error('E_FILE', `${indexPath}: tensor '${name}' is listed in ${shard} but is not there`);
    }
  } else if (await exists(singlePath)) {
    await add(singlePath);
  } else {
    throw new W4a8Error('E_FILE',
      `${dir}: no ${SINGLE_FILE} or ${INDEX_FILE} (PyTorch .bin checkpoints are not read: convert them to safetensors)`);
  }
  return located;
}

/** weight_map of an index: tensor -> shard file name, each a plain file name inside the folder. */
function shardMap(index: unknown, indexPath: string): Map<string, string> {
  const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap))
    throw new W4a8Error('E_FILE', `${indexPath}: weight_map must be an object of tensor name -> shard file`);
  const shards = new Map<string, string>();
  for (const [name, shard] of Object.entries(weightMap as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard.length === 0 || shard !== path.basename(shard) || shard === '..' || shard === '.')
      throw new W4a8Error('E_FILE', `${indexPath}: weight_map['${name}'] must be a file name in the model folder, got ${JSON.stringify(shard)}`);
    shards.set(name, shard);
  }
  return shards;
}

/** Tensors the config implies, with their shapes; F32/BF16 as stored, F16/F64 to F32. */
function collectTensors(config: ModelConfig, stored: Map<string, Located>, dir: string): Map<string, Tensor> {
  // (Before the table: it grows with num_hidden_layers, which a corrupt config.json may set to millions.)
  if (sourceTensorCount(config) > stored.size + 1)
    throw new W4a8Error('E_FILE', `${dir}: config.json implies ${sourceTensorCount(config)} tensors (${config.nLayers} layers); the checkpoint has ${stored.size}`);
  const expected = sourceTensorShapes(config);
  for (const name of stored.keys()) {
    const ignorable = name.endsWith('.rotary_emb.inv_freq') || (name === LM_HEAD && config.tieEmbeddings);
    if (!expected.has(name) && !ignorable)
      throw new W4a8Error('E_UNSUPPORTED',
        `${stored.get(name)!.file}: tensor '${name}' is not part of the supported Llama layout for this config.json`);
  }
  const tensors = new Map<string, Tensor>();
  for (const [name, shape] of expected) {
    const found = stored.get(name);
    if (!found) {
      const hint = name === LM_HEAD ? ' (tie_word_embeddings is false, so the checkpoint needs its own lm_head)' : '';
      throw new W4a8Error('E_FILE', `${dir}: missing tensor '${name}'${hint}`);
    }
    const { stored: t, file } = found;
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))
      throw new W4a8Error('E_FILE', `${file}: tensor '${name}' has shape [${t.shape.join(', ')}], config.json implies [${shape.join(', ')}]`);
    if (t.dtype === 'F32' || t.dtype === 'BF16') tensors.set(name, storedToTensor(name, t, file));
    else tensors.set(name, { dtype: 'F32', shape: shape.slice(), data: storedToFloat32(name, t, file) });
  }
  return tensors;
}

/** tokenizer.json, tokenizer_config.json and the chat template, each when present. */
async function readTokenizer(dir: string): Promise<Pick<SourceModel, 'tokenizerJson' | 'tokenizerConfigJson' | 'chatTemplate'>> {
  const result: Pick<SourceModel, 'tokenizerJson' | 'tokenizerConfigJson' | 'chatTemplate'> = {};
  const tokenizerPath = path.join(dir, 'tokenizer.json');
  const tokenizer = await readOptionalText(tokenizerPath);
  if (tokenizer !== undefined) {
    parseJsonText(tokenizer, tokenizerPath);
    result.tokenizerJson = tokenizer;
  }
  const tokenizerConfigPath = path.join(dir, 'tokenizer_config.json');
  const tokenizerConfig = await readOptionalText(tokenizerConfigPath);
  if (tokenizerConfig !== undefined) {
    result.tokenizerConfigJson = tokenizerConfig;
    const template = chatTemplateOf(parseJsonText(tokenizerConfig, tokenizerConfigPath), tokenizerConfigPath);
    if (template !== undefined) result.chatTemplate = template;
  }
  if (result.chatTemplate === undefined) {
    // Newer transformers save the template beside tokenizer_config.json.
    const jinja = await readOptionalText(path.join(dir, 'chat_template.jinja'));
    if (jinja !== undefined) result.chatTemplate = jinja;
    else {
      const jsonPath = path.join(dir, 'chat_template.json');
      const json = await readOptionalText(jsonPath);
      if (json !== undefined) result.chatTemplate = chatTemplateOf(parseJsonText(json, jsonPath), jsonPath);
    }
  }
  return result;
}

/** `chat_template` as a string, or as a list of {name, template} (the one named "default", else the first). */
function chatTemplateOf(json: unknown, file: string): string | undefined {
  const template = (json as { chat_template?: unknown } | null)?.chat_template;
  if (template === undefined || template === null) return undefined;
  if (typeof template === 'string') return template;
  if (Array.isArray(template)) {
    const named = template as { name?: unknown; template?: unknown }[];
    const chosen = named.find((t) => t?.name === 'default') ?? named[0];
    if (typeof chosen?.template === 'string') return chosen.template;
  }
  throw new W4a8Error('E_FILE', `${file}: chat_template must be a string or a list of {name, template}`);
}
