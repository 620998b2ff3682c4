/**
 * Reads a safetensors file through a read-only memory mapping (native mapFile): the header is parsed
 * and every entry checked against the file size first (safetensors-header.ts); tensors are then
 * views into the mapping, no copy. The mapping lives as long as any view of it does.
 *
 * The views are READ-ONLY: the pages are mapped PROT_READ, and a write through a view faults the
 * process. Nothing in lib/ writes to a tensor it read; callers must copy (`.slice()`) to modify.
 */
import { endianness } from 'node:os';
import { W4a8Error } from '../errors.js';
import { checkRegularFile } from './regular-file.js';
import type { DType, Tensor } from '../model/types.js';
import { callNative } from '../native.js';
import { arrayClassOf, DTYPE_SIZES, type SafetensorsDType } from './dtypes.js';
import { parseSafetensorsHeader } from './safetensors-header.js';
import { bf16ToF32, f16ToF32 } from './widen.js';

/** One tensor as stored: its raw little-endian bytes, a view into the mapping. */
export interface StoredTensor {
  dtype: SafetensorsDType;
  shape: number[];
  bytes: Uint8Array;
}

export interface SafetensorsFile {
  path: string;
  metadata: Record<string, string>;
  /** Tensors in header order. */
  tensors: Map<string, StoredTensor>;
}

/** Every typed view assumes the host reads little-endian, as the file is written. */
export function checkLittleEndianHost(): void {
  if (endianness() !== 'LE') throw new W4a8Error('E_UNSUPPORTED', 'model files are little-endian; this host is big-endian');
}

/** Maps `path` read-only; E_IO when it cannot be opened or mapped, E_FILE when it is not a regular file. */
export async function mapModelFile(path: string): Promise<ArrayBuffer> {
  if (typeof path !== 'string' || path.length === 0) throw new W4a8Error('E_TYPE', `path must be a non-empty string, got ${typeof path}`);
  await checkRegularFile(path); // (the addon checks again after its own open)
  return callNative((a) => a.mapFile(path));
}

/** Opens, maps and validates a safetensors file (every entry checked before any tensor byte is read). */
export async function readSafetensors(path: string): Promise<SafetensorsFile> {
  checkLittleEndianHost();
  const mapping = await mapModelFile(path);
  return parseSafetensorsMapping(mapping, path);
}

/** As readSafetensors, over bytes already in memory (a mapping or an ordinary buffer). */
export function parseSafetensorsMapping(buffer: ArrayBuffer, file: string): SafetensorsFile {
  const header = parseSafetensorsHeader(new Uint8Array(buffer, 0, Math.min(buffer.byteLength, headerWindow(buffer))), buffer.byteLength, file);
  const tensors = new Map<string, StoredTensor>();
  for (const [name, e] of header.entries)
    tensors.set(name, { dtype: e.dtype, shape: e.shape, bytes: byteView(buffer, header.dataStart + e.begin, e.end - e.begin, name, file) });
  return { path: file, metadata: header.metadata, tensors };
}

/** Bytes the header parser needs to see: 8 + N, where N is read from the first 8 bytes (bounded by the file). */
function headerWindow(buffer: ArrayBuffer): number {
  if (buffer.byteLength < 8) return buffer.byteLength;
  const length = new DataView(buffer, 0, 8).getBigUint64(0, true);
  return length > BigInt(buffer.byteLength - 8) ? 8 : 8 + Number(length);
}

function byteView(buffer: ArrayBuffer, offset: number, length: number, name: string, file: string): Uint8Array {
  try {
    return new Uint8Array(buffer, offset, length);
  } catch {
    throw new W4a8Error('E_FILE', `${file}: tensor '${name}' (${length} bytes) is too large for a TypedArray`);
  }
}

/**
 * A stored F32/F16/BF16/U8 tensor as a w4a8 Tensor: a zero-copy view when its bytes are aligned for
 * the element type (always so in files w4a8 writes), else an aligned copy (possible in foreign files).
 */
export function storedToTensor(name: string, stored: StoredTensor, file: string): Tensor {
  const dtype = stored.dtype;
  if (dtype !== 'F32' && dtype !== 'F16' && dtype !== 'BF16' && dtype !== 'U8')
    throw new W4a8Error('E_FILE', `${file}: tensor '${name}' has dtype ${dtype}; expected F32, F16, BF16 or U8`);
  return { dtype, shape: stored.shape.slice(), data: typedView(stored.bytes, dtype) };
}

function typedView(bytes: Uint8Array, dtype: DType): Float32Array | Uint16Array | Uint8Array {
  const kind = arrayClassOf(dtype);
  const size = DTYPE_SIZES[dtype];
  const count = bytes.byteLength / size;
  if (bytes.byteOffset % size === 0) return new kind(bytes.buffer as ArrayBuffer, bytes.byteOffset, count);
  const copy = new kind(count);
  new Uint8Array(copy.buffer).set(bytes);
  return copy;
}

/**
 * A stored floating-point tensor as FP32 values: F32 stays a view (or an aligned copy), F16 and BF16
 * are widened exactly, F64 is rounded to nearest. Other dtypes are refused with E_FILE.
 */
export function storedToFloat32(name: string, stored: StoredTensor, file: string): Float32Array {
  switch (stored.dtype) {
    case 'F32':
      return typedView(stored.bytes, 'F32') as Float32Array;
    case 'BF16':
    case 'F16': {
      const bits = typedView(stored.bytes, stored.dtype) as Uint16Array;
      return stored.dtype === 'F16' ? f16ToF32(bits) : bf16ToF32(bits);
    }
    case 'F64': {
      const values = stored.bytes.byteOffset % 8 === 0
        ? new Float64Array(stored.bytes.buffer, stored.bytes.byteOffset, stored.bytes.byteLength / 8)
        : new Float64Array(stored.bytes.slice().buffer as ArrayBuffer);
      return Float32Array.from(values);
    }
    default:
      throw new W4a8Error('E_FILE', `${file}: tensor '${name}' has dtype ${stored.dtype}; expected a floating-point type (F32, F16, BF16, F64)`);
  }
}
