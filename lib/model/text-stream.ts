/**
 * Turns generated token ids into text chunks as they come: decodes incrementally, holds back an
 * incomplete UTF-8 character and any tail that could still become a stop string, and cuts the text at
 * the earliest stop string.
 *
 * Each token costs two decodes of a short window, not one of the whole generation (which made a long
 * generation quadratic on the JS thread): `prefix` and `read` mark token positions where the text so far was
 * complete; the new text is decode(ids[prefix..]) minus decode(ids[prefix..read]), both starting at the same
 * token, so a decoder's treatment of a sequence's first token (a dropped leading space) cancels out. When the
 * longer window does not extend the shorter one (a decoder whose cleanup looks back further), the whole
 * generation is decoded again, as a fallback.
 */
export class TextStream {
  private readonly ids: number[] = [];
  private prefix = 0;
  private read = 0;
  private emitted = 0;
  private text = '';
  stopped = false;

  constructor(private readonly decode: (ids: number[]) => string, private readonly stops: readonly string[]) {}

  /** Adds one token; returns the text that became final. */
  push(id: number): string {
    this.ids.push(id);
    const window = this.decode(this.ids.slice(this.prefix));
    if (window.endsWith('\uFFFD')) return ''; // a multi-byte character is still incomplete
    const before = this.read > this.prefix ? this.decode(this.ids.slice(this.prefix, this.read)) : '';
    if (window.startsWith(before)) this.text += window.slice(before.length);
    else this.text = this.decode(this.ids);
    this.prefix = this.read;
    this.read = this.ids.length;
    // The stop string that starts first in the text ends it (not the first one in the list).
    let cut = -1;
    for (const stop of this.stops) {
      const at = this.text.indexOf(stop, Math.max(0, this.emitted - stop.length));
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.stopped = true;
      this.text = this.text.slice(0, cut);
      return this.take(this.text.length);
    }
    return this.take(this.text.length - this.heldBack(this.text));
  }

  /** The rest of the text once generation has ended. */
  flush(): string {
    if (!this.stopped && this.ids.length > this.read) {
      // It ended inside a multi-byte character: those bytes still decode (to U+FFFD), as decode(all ids) gives them.
      const window = this.decode(this.ids.slice(this.prefix));
      const before = this.read > this.prefix ? this.decode(this.ids.slice(this.prefix, this.read)) : '';
      this.text = window.startsWith(before) ? this.text + window.slice(before.length) : this.decode(this.ids);
      this.read = this.ids.length;
    }
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
