/**
 * The safetensors header: parsed and checked against the file size before any tensor byte is read.
 *
 * File layout (https://github.com/huggingface/safetensors):
 *   [0, 8)        u64 little-endian N: length of the header in bytes
 *   [8, 8+N)      UTF-8 JSON object, possibly padded with trailing spaces:
 *                   { "__metadata__": { "<key>": "<string>", ... },                       (optional)
 *                     "<tensor name>": { "dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end] }, ... }
 *   [8+N, EOF)    data section; tensor offsets are relative to its start, every tensor is row-major
 *                 little-endian, and the tensors tile the section exactly: no holes, no overlaps.
 * Every rule broken gives W4a8Error('E_FILE') naming the file and the tensor or field.
 */
import { W4a8Error } from '../errors.js';
import { DTYPE_SIZES, elementCount, isSafetensorsDType, type SafetensorsDType } from './dtypes.js';

/** The safetensors library refuses headers over 100 MB; so do we (a tokenizer in metadata is a few MB). */
export const MAX_HEADER_BYTES = 100_000_000;
export const HEADER_LENGTH_BYTES = 8;
export const METADATA_KEY = '__metadata__';

/** One tensor's entry; begin/end are byte offsets relative to the data section. */
export interface HeaderEntry {
  dtype: SafetensorsDType;
  shape: number[];
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** Absolute file offset of the data section (8 + N). */
  dataStart: number;
  metadata: Record<string, string>;
  /** Tensors in header order. */
  entries: Map<string, HeaderEntry>;
}

function fail(file: string, message: string): never {
  throw new W4a8Error('E_FILE', `${file}: ${message}`);
}

/**
 * Reads the 8-byte length, the JSON header and every entry from `bytes` (the whole file, or at least
 * its first 8 + N bytes) given the total file size; checks every offset against that size.
 */
export function parseSafetensorsHeader(bytes: Uint8Array, fileSize: number, file: string): SafetensorsHeader {
  if (fileSize < HEADER_LENGTH_BYTES)
    fail(file, `file is ${fileSize} bytes, shorter than the ${HEADER_LENGTH_BYTES}-byte header length`);
  const length = new DataView(bytes.buffer, bytes.byteOffset, HEADER_LENGTH_BYTES).getBigUint64(0, true);
  if (length > BigInt(fileSize - HEADER_LENGTH_BYTES))
    fail(file, `header length ${length} goes past the end of the file (${fileSize} bytes)`);
  if (length > BigInt(MAX_HEADER_BYTES)) fail(file, `header length ${length} is over the ${MAX_HEADER_BYTES}-byte limit`);
  const headerLength = Number(length);
  const dataStart = HEADER_LENGTH_BYTES + headerLength;
  if (bytes.length < dataStart) fail(file, 'header bytes not available'); // a caller bug rather than a file fault

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(HEADER_LENGTH_BYTES, dataStart));
  } catch {
    fail(file, 'header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    fail(file, `header is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) fail(file, 'header is not a JSON object');

  const dataLength = fileSize - dataStart;
  let metadata: Record<string, string> = {};
  const entries = new Map<string, HeaderEntry>();
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === METADATA_KEY) metadata = parseMetadata(value, file);
    else entries.set(name, parseEntry(name, value, dataLength, file));
  }
  checkTiling(entries, dataLength, file);
  return { dataStart, metadata, entries };
}

function parseMetadata(value: unknown, file: string): Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(file, `${METADATA_KEY} must be an object of strings`);
  const entries = Object.entries(value as Record<string, unknown>);
  for (const [key, v] of entries) if (typeof v !== 'string') fail(file, `${METADATA_KEY}.${key} must be a string, got ${typeof v}`);
  return Object.fromEntries(entries) as Record<string, string>; // own properties only, '__proto__' included
}

function parseEntry(name: string, value: unknown, dataLength: number, file: string): HeaderEntry {
  const where = `tensor '${name}'`;
  if (name.length === 0) fail(file, 'a tensor has an empty name');
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(file, `${where}: entry must be an object`);
  const entry = value as Record<string, unknown>;
  for (const key of Object.keys(entry))
    if (key !== 'dtype' && key !== 'shape' && key !== 'data_offsets') fail(file, `${where}: unknown field '${key}'`);
  const { dtype, shape, data_offsets: offsets } = entry;
  if (!isSafetensorsDType(dtype)) fail(file, `${where}: unknown dtype ${JSON.stringify(dtype)}`);
  const count = elementCount(shape);
  if (count === undefined) fail(file, `${where}: shape ${JSON.stringify(shape)} must be a list of non-negative integers`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0))
    fail(file, `${where}: data_offsets ${JSON.stringify(offsets)} must be two non-negative integers`);
  const [begin, end] = offsets as [number, number];
  if (begin > end) fail(file, `${where}: data_offsets [${begin}, ${end}] end before they begin`);
  if (end > dataLength) fail(file, `${where}: data_offsets [${begin}, ${end}] go past the data section (${dataLength} bytes)`);
  const bytes = count * DTYPE_SIZES[dtype];
  if (!Number.isSafeInteger(bytes) || end - begin !== bytes)
    fail(file, `${where}: ${end - begin} bytes at data_offsets but shape [${(shape as number[]).join(', ')}] of ${dtype} needs ${bytes}`);
  return { dtype, shape: (shape as number[]).slice(), begin, end };
}

/** The tensors must cover [0, dataLength) exactly, in some order, without overlapping. */
function checkTiling(entries: Map<string, HeaderEntry>, dataLength: number, file: string): void {
  const sorted = [...entries].sort((a, b) => a[1].begin - b[1].begin || a[1].end - b[1].end);
  let cursor = 0;
  let previous = '';
  for (const [name, e] of sorted) {
    if (e.begin < cursor) fail(file, `tensor '${name}' (bytes ${e.begin}..${e.end}) overlaps tensor '${previous}' (ends at ${cursor})`);
    if (e.begin > cursor) fail(file, `hole in the data section: bytes ${cursor}..${e.begin} belong to no tensor (before '${name}')`);
    cursor = e.end;
    previous = name;
  }
  if (cursor !== dataLength) fail(file, `hole in the data section: bytes ${cursor}..${dataLength} belong to no tensor`);
}
