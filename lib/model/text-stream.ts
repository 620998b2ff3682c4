/**
 * Turns generated token ids into text chunks as they come: decodes incrementally, holds back an
 * incomplete UTF-8 character and any tail that could still become a stop string, and cuts the text at
 * the first stop string.
 */
export class TextStream {
  private readonly ids: number[] = [];
  private emitted = 0;
  private text = '';
  stopped = false;

  constructor(private readonly decode: (ids: number[]) => string, private readonly stops: readonly string[]) {}

  /** Adds one token; returns the text that became final. */
  push(id: number): string {
    this.ids.push(id);
    const full = this.decode(this.ids);
    if (full.endsWith('\uFFFD')) return ''; // a multi-byte character is still incomplete
    this.text = full;
    for (const stop of this.stops) {
      const at = full.indexOf(stop, Math.max(0, this.emitted - stop.length));
      if (at >= 0) {
        this.stopped = true;
        this.text = full.slice(0, at);
        return this.take(this.text.length);
      }
    }
    return this.take(full.length - this.heldBack(full));
  }

  /** The rest of the text once generation has ended. */
  flush(): string {
    return this.take(this.text.length);
  }

  get fullText(): string {
    return this.text;
  }

  private take(end: number): string {
    if (end <= this.emitted) return '';
    const chunk = this.text.slice(this.emitted, end);
    this.emitted = end;
    return chunk;
  }

  /** Length of the longest tail of `text` that is a proper prefix of a stop string. */
  private heldBack(text: string): number {
    let longest = 0;
    for (const stop of this.stops)
      for (let n = Math.min(stop.length - 1, text.length); n > longest; n--)
        if (text.endsWith(stop.slice(0, n))) { longest = n; break; }
    return longest;
  }
}
