/**
 * Where a model's forward steps run: the CPU (always), or an NVIDIA Hopper GPU through the CUDA plugin
 * (build/Release/w4a8_cuda.so, built when CMake finds nvcc; native/model/cuda_plugin.h).
 */
import { W4a8Error } from '../errors.js';
import { callNativeAsync } from '../native.js';

export type Device = 'cpu' | 'cuda' | 'auto';

export interface CudaDeviceInfo {
  /** A GPU the kernels run on (Hopper, sm_90) was found through the CUDA plugin. */
  available: boolean;
  /** e.g. "NVIDIA H200"; empty when none. */
  name: string;
  /** Why CUDA is unavailable (no CUDA build, no driver, no GPU, another architecture); empty when available. */
  reason: string;
  computeCapability: string;
  memoryBytes: number;
}

/** Which device a model runs on: 'cpu' or 'cuda', and its name (the CPU kernel set, or the GPU). */
export interface BackendInfo {
  device: 'cpu' | 'cuda';
  name: string;
}

const DEVICES: readonly Device[] = ['cpu', 'cuda', 'auto'];

export function checkDevice(value: unknown): Device {
  if (value === undefined) return 'auto';
  if (typeof value !== 'string' || !DEVICES.includes(value as Device))
    throw new W4a8Error('E_OPTION', `device must be 'cpu', 'cuda' or 'auto', got ${String(value)}`);
  return value as Device;
}

let probe: Promise<CudaDeviceInfo> | undefined;

/** The GPU the CUDA plugin finds (probed once per process, off the JS thread). */
export function cudaDevice(): Promise<CudaDeviceInfo> {
  probe ??= callNativeAsync((a) => a.cudaDevice());
  return probe;
}
