/**
 * Writes a safetensors file (layout in safetensors-header.ts) atomically and without building it in
 * memory: the header goes out first, then each tensor's own bytes straight from its TypedArray, into a
 * temporary file beside the target that is renamed over it once complete and flushed. A failure
 * leaves the target untouched and removes the temporary file.
 *
 * Alignment: tensors are laid out by element size, largest first (F32, then F16/BF16, then U8), and
 * the header JSON is padded with spaces so that the data section starts at a multiple of 8 bytes.
 * Since the tensors then tile the section without holes, every tensor's file offset is a multiple of
 * its element size, and a reader's mapping (page-aligned) gives aligned TypedArray views for free.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { W4a8Error } from '../errors.js';
import type { DType, Tensor } from '../model/types.js';
import { arrayClassOf, DTYPE_SIZES, elementCount } from './dtypes.js';
import { HEADER_LENGTH_BYTES, MAX_HEADER_BYTES, METADATA_KEY } from './safetensors-header.js';

/** Largest single write; keeps each write() under the 2 GB per-call limit of fs. */
const WRITE_CHUNK_BYTES = 64 << 20;

export interface WriteResult {
  path: string;
  /** File size. */
  bytes: number;
  tensors: number;
}

interface Placed {
  name: string;
  tensor: Tensor;
  begin: number;
  end: number;
}

/** Checks each tensor (dtype, TypedArray kind, shape = data length); returns them in data order with offsets. */
function layOut(tensors: Map<string, Tensor>): Placed[] {
  const checked: { name: string; tensor: Tensor }[] = [];
  for (const [name, tensor] of tensors) {
    if (typeof name !== 'string' || name.length === 0 || name === METADATA_KEY)
      throw new W4a8Error('E_OPTION', `tensor name ${JSON.stringify(name)} is not allowed`);
    const dtype = tensor?.dtype as DType;
    if (!['F32', 'F16', 'BF16', 'U8'].includes(dtype))
      throw new W4a8Error('E_TYPE', `tensor '${name}': dtype must be F32, F16, BF16 or U8, got ${JSON.stringify(dtype)}`);
    const kind = arrayClassOf(dtype);
    if (!(tensor.data instanceof kind))
      throw new W4a8Error('E_TYPE', `tensor '${name}': ${dtype} data must be a ${kind.name}, got ${tensor.data?.constructor?.name}`);
    const count = elementCount(tensor.shape);
    if (count === undefined)
      throw new W4a8Error('E_SHAPE', `tensor '${name}': shape ${JSON.stringify(tensor.shape)} must be a list of non-negative integers`);
    if (count !== tensor.data.length)
      throw new W4a8Error('E_LENGTH', `tensor '${name}': shape [${tensor.shape.join(', ')}] has ${count} elements, data has ${tensor.data.length}`);
    checked.push({ name, tensor });
  }
  // Stable sort: within one element size the caller's order is kept.
  checked.sort((a, b) => DTYPE_SIZES[b.tensor.dtype] - DTYPE_SIZES[a.tensor.dtype]);
  let offset = 0;
  return checked.map(({ name, tensor }) => {
    const begin = offset;
    offset += tensor.data.byteLength;
    return { name, tensor, begin, end: offset };
  });
}

/** The 8-byte length and the JSON header, padded with spaces so that 8 + N is a multiple of 8. */
function encodeHeader(placed: Placed[], metadata: Record<string, string> | undefined): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    for (const [key, value] of Object.entries(metadata))
      if (typeof value !== 'string') throw new W4a8Error('E_TYPE', `metadata.${key} must be a string, got ${typeof value}`);
    header[METADATA_KEY] = metadata;
  }
  for (const p of placed) header[p.name] = { dtype: p.tensor.dtype, shape: p.tensor.shape, data_offsets: [p.begin, p.end] };
  const json = JSON.stringify(header);
  const jsonBytes = Buffer.byteLength(json, 'utf8');
  const padded = Math.ceil((HEADER_LENGTH_BYTES + jsonBytes) / 8) * 8 - HEADER_LENGTH_BYTES;
  if (padded > MAX_HEADER_BYTES) throw new W4a8Error('E_OPTION', `the header would be ${padded} bytes, over the ${MAX_HEADER_BYTES}-byte limit`);
  const out = Buffer.alloc(HEADER_LENGTH_BYTES + padded, 0x20);
  out.writeBigUInt64LE(BigInt(padded), 0);
  out.write(json, HEADER_LENGTH_BYTES, 'utf8');
  return out;
}

async function writeAll(file: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.byteLength) {
    const length = Math.min(WRITE_CHUNK_BYTES, bytes.byteLength - done);
    const { bytesWritten } = await file.write(bytes, done, length, position + done);
    if (bytesWritten <= 0) throw new Error('write made no progress');
    done += bytesWritten;
  }
}

/** Writes `tensors` and string `metadata` to `target` as a safetensors file, atomically (temp file + rename). */
export async function writeSafetensors(
  target: string, tensors: Map<string, Tensor>, metadata?: Record<string, string>,
): Promise<WriteResult> {
  if (typeof target !== 'string' || target.length === 0) throw new W4a8Error('E_TYPE', 'path must be a non-empty string');
  if (!(tensors instanceof Map)) throw new W4a8Error('E_TYPE', 'tensors must be a Map of name -> Tensor');
  const placed = layOut(tensors);
  const header = encodeHeader(placed, metadata);
  const temporary = path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let file: FileHandle | undefined;
  try {
    file = await open(temporary, 'wx');
    await writeAll(file, header, 0);
    for (const p of placed) {
      const data = p.tensor.data;
      await writeAll(file, new Uint8Array(data.buffer, data.byteOffset, data.byteLength), header.length + p.begin);
    }
    await file.datasync();
    await file.close();
    file = undefined;
    await rename(temporary, target);
  } catch (error) {
    await file?.close().catch(() => undefined);
    await unlink(temporary).catch(() => undefined);
    if (error instanceof W4a8Error) throw error;
    throw new W4a8Error('E_IO', `cannot write '${target}': ${(error as Error).message}`);
  }
  const last = placed[placed.length - 1];
  return { path: target, bytes: header.length + (last ? last.end : 0), tensors: placed.length };
}
