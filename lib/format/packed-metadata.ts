/**
 * The `__metadata__` of a packed W4A8 file. safetensors metadata values are strings, so structured
 * values are JSON text:
 *   format            "w4a8"
 *   format_version    "1"       (a reader refuses versions it does not know)
 *   config            JSON of ModelConfig   (lib/model/types.ts)
 *   quantization      JSON of QuantConfig
 *   tokenizer         tokenizer.json text          (optional)
 *   tokenizer_config  tokenizer_config.json text   (optional)
 *   chat_template     Jinja chat template          (optional)
 * Other keys are ignored by readers (room for provenance), and never written by this version.
 */
import { W4a8Error, type W4a8ErrorCode } from '../errors.js';
import type { ModelConfig, PackedModel, QuantConfig } from '../model/types.js';
import { checkModelConfig, checkQuantConfig } from './config.js';

export const FORMAT_NAME = 'w4a8';
export const FORMAT_VERSION = '1';
export const SUPPORTED_VERSIONS: readonly string[] = ['1'];

export const METADATA_KEYS = {
  format: 'format',
  version: 'format_version',
  config: 'config',
  quantization: 'quantization',
  tokenizer: 'tokenizer',
  tokenizerConfig: 'tokenizer_config',
  chatTemplate: 'chat_template',
} as const;

export type PackedDescription = Omit<PackedModel, 'tensors'>;

export function encodePackedMetadata(model: PackedDescription): Record<string, string> {
  const metadata: Record<string, string> = {
    [METADATA_KEYS.format]: FORMAT_NAME,
    [METADATA_KEYS.version]: FORMAT_VERSION,
    [METADATA_KEYS.config]: JSON.stringify(model.config),
    [METADATA_KEYS.quantization]: JSON.stringify(model.quant),
  };
  const optional = [
    [METADATA_KEYS.tokenizer, model.tokenizerJson, 'tokenizerJson'],
    [METADATA_KEYS.tokenizerConfig, model.tokenizerConfigJson, 'tokenizerConfigJson'],
    [METADATA_KEYS.chatTemplate, model.chatTemplate, 'chatTemplate'],
  ] as const;
  for (const [key, value, field] of optional) {
    if (value === undefined) continue;
    if (typeof value !== 'string') throw new W4a8Error('E_TYPE', `model.${field} must be a string, got ${typeof value}`);
    metadata[key] = value;
  }
  return metadata;
}

function parseJson(text: string, field: string, file: string, code: W4a8ErrorCode): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new W4a8Error(code, `${file}: metadata ${field} is not valid JSON: ${(error as Error).message}`);
  }
}

/** Checks format name and version first (a foreign or newer file gets a clear message), then each value. */
export function decodePackedMetadata(metadata: Record<string, string>, file: string): PackedDescription {
  function fail(message: string): never {
    throw new W4a8Error('E_FILE', `${file}: ${message}`);
  }
  const format = metadata[METADATA_KEYS.format];
  if (format !== FORMAT_NAME)
    fail(`not a w4a8 packed model: metadata ${METADATA_KEYS.format} is ${JSON.stringify(format)}, expected "${FORMAT_NAME}"`);
  const version = metadata[METADATA_KEYS.version];
  if (!SUPPORTED_VERSIONS.includes(version))
    fail(`metadata ${METADATA_KEYS.version} ${JSON.stringify(version)} is not supported (this reader knows ${SUPPORTED_VERSIONS.join(', ')})`);
  for (const key of [METADATA_KEYS.config, METADATA_KEYS.quantization])
    if (metadata[key] === undefined) fail(`metadata ${key} is missing`);
  const withFile = <T>(check: () => T): T => {
    try {
      return check();
    } catch (error) {
      if (error instanceof W4a8Error) throw new W4a8Error('E_FILE', `${file}: metadata ${error.message}`);
      throw error;
    }
  };
  const configJson = parseJson(metadata.config, METADATA_KEYS.config, file, 'E_FILE');
  const quantJson = parseJson(metadata.quantization, METADATA_KEYS.quantization, file, 'E_FILE');
  const config: ModelConfig = withFile(() => checkModelConfig(configJson, 'config', 'E_FILE'));
  const quant: QuantConfig = withFile(() => checkQuantConfig(quantJson, 'quantization', 'E_FILE'));
  const description: PackedDescription = { config, quant };
  const tokenizer = metadata[METADATA_KEYS.tokenizer];
  if (tokenizer !== undefined) {
    parseJson(tokenizer, METADATA_KEYS.tokenizer, file, 'E_FILE');
    description.tokenizerJson = tokenizer;
  }
  const tokenizerConfig = metadata[METADATA_KEYS.tokenizerConfig];
  if (tokenizerConfig !== undefined) {
    parseJson(tokenizerConfig, METADATA_KEYS.tokenizerConfig, file, 'E_FILE');
    description.tokenizerConfigJson = tokenizerConfig;
  }
  const chatTemplate = metadata[METADATA_KEYS.chatTemplate];
  if (chatTemplate !== undefined) description.chatTemplate = chatTemplate;
  return description;
}
