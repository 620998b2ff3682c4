/**
 * Every error w4a8 throws is a W4a8Error with a stable `code`; messages name the argument at fault.
 */
export type W4a8ErrorCode =
  | 'E_TYPE' // wrong JS type or TypedArray kind
  | 'E_LENGTH' // TypedArray length does not match the shape
  | 'E_SHAPE' // dimension not a positive integer in range, or inconsistent shapes
  | 'E_EMPTY' // a zero-size input
  | 'E_GROUP' // group size not 32/64/128, or not dividing K
  | 'E_FORMAT' // unknown FP8 format
  | 'E_SCALE' // a scale that is NaN, infinite or <= 0
  | 'E_CODE' // an INT4 zero point outside 0..15
  | 'E_OPTION' // an unknown option value
  | 'E_NATIVE' // the native addon failed unexpectedly
  | 'E_ADDON' // the native addon could not be loaded
  | 'E_FILE' // a model file (packed, safetensors, llama2.c, config.json ...) is corrupt or invalid
  | 'E_IO' // a file could not be opened, mapped, read or written
  | 'E_UNSUPPORTED' // a valid model whose architecture or feature w4a8 does not run
  | 'E_DISPOSED' // the model was disposed
  | 'E_ABORTED' // the request was aborted through its AbortSignal
  | 'E_CONTEXT' // the prompt does not fit the context
  | 'E_SEQUENCE' // an unknown sequence id reached the native model
  | 'E_STEP' // a forward step failed in native code
  | 'E_BUSY' // the request queue is full
  | 'E_TEMPLATE' // the model's chat template failed on the messages (or raised an error about them)
  | 'E_VALUE' // a NaN or infinite value where finite ones are required (e.g. weights to pack)
  | 'E_STALLED'; // a stream left full and unread for its stallTimeoutMs: its request was ended

export class W4a8Error extends Error {
  readonly code: W4a8ErrorCode;

  constructor(code: W4a8ErrorCode, message: string) {
    super(message);
    this.name = 'W4a8Error';
    this.code = code;
  }
}

const KNOWN_CODES = new Set<string>([
  'E_TYPE', 'E_LENGTH', 'E_SHAPE', 'E_EMPTY', 'E_GROUP', 'E_FORMAT', 'E_SCALE', 'E_CODE', 'E_OPTION', 'E_NATIVE',
  'E_ADDON', 'E_FILE', 'E_IO', 'E_UNSUPPORTED', 'E_DISPOSED', 'E_ABORTED', 'E_CONTEXT', 'E_SEQUENCE', 'E_STEP', 'E_BUSY',
  'E_TEMPLATE', 'E_VALUE', 'E_STALLED',
]);

/** Turns an error thrown by the addon (an Error with a `code`) into a W4a8Error. */
export function fromNativeError(error: unknown): W4a8Error {
  if (error instanceof W4a8Error) return error;
  const code = (error as { code?: unknown })?.code;
  const message = error instanceof Error ? error.message : String(error);
  return new W4a8Error(typeof code === 'string' && KNOWN_CODES.has(code) ? (code as W4a8ErrorCode) : 'E_NATIVE', message);
}
