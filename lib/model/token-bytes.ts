/**
 * A token's own bytes (OpenAI's `bytes` in log probabilities): what it contributes to the UTF-8 of the text, also when
 * that is part of a character (decoding such a token alone gives U+FFFD). The tokenizer library has no API for it, so
 * it is read from the token's vocabulary string by the two encodings LLM vocabularies use:
 *   byte-level BPE (GPT-2, Llama 3, Qwen: decoder 'ByteLevel'): each character of the string stands for one byte;
 *   SentencePiece-style (Llama 2, Mistral: '<0xNN>' byte-fallback tokens, '▁' for a space): the string is text.
 * Anything else, and added or special tokens, give the UTF-8 of the token's decoding.
 */

/** GPT-2's byte -> printable character map, which ByteLevel pre-tokenizers and decoders use. */
export function byteToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = 33; b <= 126; b++) printable.push(b);
  for (let b = 161; b <= 172; b++) printable.push(b);
  for (let b = 174; b <= 255; b++) printable.push(b);
  const map: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) map[b] = String.fromCodePoint(printable.includes(b) ? b : 256 + extra++);
  return map;
}

export type VocabularyEncoding = 'byte-level' | 'sentencepiece' | 'text';

/** How tokenizer.json's vocabulary strings encode bytes. */
export function vocabularyEncoding(json: Record<string, unknown>): VocabularyEncoding {
  const decoder = json.decoder as { type?: unknown; decoders?: { type?: unknown }[] } | null | undefined;
  if (decoder?.type === 'ByteLevel') return 'byte-level';
  const parts = decoder?.type === 'Sequence' && Array.isArray(decoder.decoders) ? decoder.decoders : [];
  const model = json.model as { byte_fallback?: unknown } | undefined;
  if (model?.byte_fallback === true || parts.some((d) => d?.type === 'ByteFallback' || d?.type === 'Metaspace')) return 'sentencepiece';
  return 'text';
}

const utf8 = new TextEncoder();
let unicodeToByte: Map<string, number> | undefined;

/** The bytes of vocabulary string `token` (undefined when it does not follow `encoding`: the caller decodes instead). */
export function vocabularyBytes(token: string, encoding: VocabularyEncoding): Uint8Array | undefined {
  if (encoding === 'byte-level') {
    unicodeToByte ??= new Map(byteToUnicode().map((ch, b) => [ch, b]));
    const bytes: number[] = [];
    for (const ch of token) {
      const b = unicodeToByte.get(ch);
      if (b === undefined) return undefined;
      bytes.push(b);
    }
    return Uint8Array.from(bytes);
  }
  if (encoding === 'sentencepiece') {
    const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(token);
    return byte ? Uint8Array.of(parseInt(byte[1], 16)) : utf8.encode(token.replaceAll('\u2581', ' '));
  }
  return undefined;
}
