/**
 * HPACK decoder (RFC 7541) for passively captured header blocks: one HpackDecoder per connection
 * per direction, fed every header block of that direction in wire order (HEADERS, trailers and
 * PUSH_PROMISE alike).
 *
 * Knowing only part of the table. A capture may start in the middle of a connection, or lose a
 * header block later. The encoder's dynamic table is then partly unknown. What we do know: every
 * entry inserted after that point, and that these are the encoder's newest entries. So dynamic
 * index d (0 = newest) resolves to the d-th newest insertion we saw, when we saw d+1 of them; an
 * index past those is UNKNOWN while the older part of the table ("tail") is unknown. An unknown
 * field is left out of the result and counted (`unknown`); nothing is guessed or shifted.
 *
 * Entries we hold whose name or value could not be read (unknown name index, Huffman garbage) stay
 * in the table as placeholders, so later indexes keep their positions; their size counts as the
 * smallest it could be. Holding more entries than the encoder (it evicted, we did not yet) is
 * harmless: the encoder never references entries it evicted. Evicting entries the encoder still
 * holds only turns them unknown. Both directions of error are therefore safe, and this decoder
 * errs towards holding entries when sizes are uncertain.
 *
 * The tail becomes known again when the table provably holds nothing older than what we saw: a
 * dynamic table size update to a size smaller than what we hold plus one minimal entry (32 bytes),
 * in particular size 0, or our entries alone fill the (exactly known) maximum size.
 *
 * Bounds: a table holds at most `tableMemCap` size units (RFC 7541 4.1 sizes); past that the oldest
 * entries are dropped and the tail becomes unknown. A shared HpackMemory budget bounds all tables
 * together. A block's decoded header list is capped at `maxHeaderListSize` (fields past it are
 * dropped, `oversize` set, the table is still maintained). Integers past 2^32 are malformed.
 * Malformed input never throws: the block's `error` is set, and the direction's table becomes
 * unknown (insertions after the error point cannot be known).
 */
import { huffmanDecode } from "./huffman.ts";

/** RFC 7541 Appendix A. Index 1 is STATIC[0]. */
export const STATIC_TABLE: readonly (readonly [string, string])[] = [
  [":authority", ""], [":method", "GET"], [":method", "POST"], [":path", "/"], [":path", "/index.html"],
  [":scheme", "http"], [":scheme", "https"], [":status", "200"], [":status", "204"], [":status", "206"],
  [":status", "304"], [":status", "400"], [":status", "404"], [":status", "500"], ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"], ["accept-language", ""], ["accept-ranges", ""], ["accept", ""],
  ["access-control-allow-origin", ""], ["age", ""], ["allow", ""], ["authorization", ""],
  ["cache-control", ""], ["content-disposition", ""], ["content-encoding", ""], ["content-language", ""],
  ["content-length", ""], ["content-location", ""], ["content-range", ""], ["content-type", ""],
  ["cookie", ""], ["date", ""], ["etag", ""], ["expect", ""], ["expires", ""], ["from", ""], ["host", ""],
  ["if-match", ""], ["if-modified-since", ""], ["if-none-match", ""], ["if-range", ""],
  ["if-unmodified-since", ""], ["last-modified", ""], ["link", ""], ["location", ""], ["max-forwards", ""],
  ["proxy-authenticate", ""], ["proxy-authorization", ""], ["range", ""], ["referer", ""], ["refresh", ""],
  ["retry-after", ""], ["server", ""], ["set-cookie", ""], ["strict-transport-security", ""],
  ["transfer-encoding", ""], ["user-agent", ""], ["vary", ""], ["via", ""], ["www-authenticate", ""],
];
const STATIC_COUNT = 61;

/** Shared bound on the size units held by all tables that use it. */
export class HpackMemory {
  used = 0;
  constructor(readonly limit: number) {}
}
/** Default budget shared by every decoder not given its own: 64 MiB of table size units. */
export const DEFAULT_HPACK_MEMORY = new HpackMemory(64 * 1024 * 1024);

export interface HpackOptions {
  /** The connection was seen from its first byte: the table starts empty at 4096, tail known. */
  fromStart: boolean;
  /** Most size units one table holds (default 65536). */
  tableMemCap?: number;
  /** Largest decoded header list (sum of name + value + 32) kept per block (default 65536). */
  maxHeaderListSize?: number;
  memory?: HpackMemory;
}

/** Result of one header block, reused between calls (copy what you keep). */
export class HeaderBlock {
  names: string[] = [];
  values: string[] = [];
  count = 0;
  /** Fields left out because their name or value is unknown (unknown index, unreadable string). */
  unknown = 0;
  /** Fields dropped because the header list exceeded maxHeaderListSize. */
  oversize = 0;
  /** Huffman strings that did not decode (their fields are counted in `unknown`). */
  huffmanErrors = 0;
  /** Set when the block is malformed; fields decoded before the error point are kept. */
  error: string | undefined = undefined;
  /** Dynamic table size updates applied, and whether one exceeded the acknowledged setting. */
  sizeUpdates = 0;
  sizeUpdateAboveSetting = false;
  reset(): void {
    this.count = this.unknown = this.oversize = this.huffmanErrors = this.sizeUpdates = 0;
    this.error = undefined;
    this.sizeUpdateAboveSetting = false;
  }
  push(name: string, value: string): void {
    this.names[this.count] = name;
    this.values[this.count] = value;
    this.count++;
  }
}

const MAX_INT = 2 ** 32;
const utf8 = new TextDecoder("utf-8");

/** Bytes → string: ASCII byte for byte, anything with bytes >= 0x80 as UTF-8 (U+FFFD for invalid). */
export function octetsToString(b: Uint8Array, start: number, end: number): string {
  const n = end - start;
  if (n <= 0) return "";
  if (n <= 12) {
    // short strings: building is cheaper than a decoder call
    let s = "";
    for (let i = start; i < end; i++) {
      const c = b[i]!;
      if (c >= 0x80) return utf8.decode(b.subarray(start, end));
      s += String.fromCharCode(c);
    }
    return s;
  }
  return utf8.decode(b.subarray(start, end));
}

export class HpackDecoder {
  /** Ring of entries, oldest at `head`, newest at `head + len - 1` (mod capacity). */
  private names: (string | null)[] = new Array(16);
  private values: (string | null)[] = new Array(16);
  private sizes: number[] = new Array(16);
  private nameLens: number[] = new Array(16);
  private head = 0;
  private len = 0;
  /** Sum of entry sizes held (lower bounds for placeholders). */
  private held = 0;
  /** The encoder's maximum table size, when known exactly (from the start, or a size update). */
  private maxSize: number;
  private maxKnown: boolean;
  /** Nothing older than our entries is in the encoder's table. */
  private tailKnown: boolean;
  /** SETTINGS_HEADER_TABLE_SIZE acknowledged by the encoder (an upper bound for updates), if seen. */
  private settingBound: number | undefined;
  private readonly memCap: number;
  private readonly listCap: number;
  private readonly memory: HpackMemory;
  private scratch = new Uint8Array(256);

  constructor(opts: HpackOptions) {
    this.memCap = opts.tableMemCap ?? 65536;
    this.listCap = opts.maxHeaderListSize ?? 65536;
    this.memory = opts.memory ?? DEFAULT_HPACK_MEMORY;
    this.maxSize = 4096;
    this.maxKnown = opts.fromStart;
    this.tailKnown = opts.fromStart;
    this.settingBound = opts.fromStart ? 4096 : undefined;
  }

  /** Number of dynamic entries held (known or placeholder). */
  get entryCount(): number { return this.len; }
  /** Sum of entry sizes held (RFC 7541 4.1). */
  get size(): number { return this.held; }
  /** Whether every entry of the encoder's table is held. */
  get complete(): boolean { return this.tailKnown; }
  get maxTableSize(): number | undefined { return this.maxKnown ? this.maxSize : undefined; }

  /** Dynamic entry `d` (0 = newest) as [name, value] (null = unknown), or undefined past what is held. */
  entry(d: number): [string | null, string | null] | undefined {
    if (d < 0 || d >= this.len) return undefined;
    const k = (this.head + this.len - 1 - d) & (this.names.length - 1);
    return [this.names[k]!, this.values[k]!];
  }

  /** The table's maximum size is `v`, known exactly (e.g. both ends were configured with it before
   * the first block, as in RFC 7541 C.5): applied like a dynamic table size update. */
  setMaxSize(v: number): void {
    this.sizeUpdate(v, new HeaderBlock());
    this.settingBound = v;
  }

  /** The encoder acknowledged SETTINGS_HEADER_TABLE_SIZE = v: an upper bound for its size updates. */
  setSettingBound(v: number): void { this.settingBound = v; }

  /**
   * Bytes of this direction were lost where a header block may have been (a gap inside a block,
   * or over frame headers): the encoder may have inserted entries we did not see, which shifts
   * every index, so nothing we hold can be trusted any more.
   */
  forget(): void {
    this.clear();
    this.maxKnown = false;   // the lost part may have held a size update
    this.tailKnown = false;
  }

  /** Releases the memory this table holds from the shared budget (connection closed). */
  release(): void { this.clear(); }

  /** Decodes one complete header block `b[start..end)` into `out` (reset first). */
  decode(b: Uint8Array, start: number, end: number, out: HeaderBlock): void {
    out.reset();
    let p = start;
    let listSize = 0;
    let fieldsSeen = false;
    while (p < end) {
      const first = b[p]!;
      let name: string | null;
      let value: string | null;
      let index: boolean;
      if (first & 0x80) {
        // indexed field (7-bit prefix)
        const i = this.readInt(b, p, end, 7);
        if (i < 0) { this.malformed(out, "bad integer"); return; }
        p = this.pos;
        if (i === 0) { this.malformed(out, "index 0"); return; }
        fieldsSeen = true;
        if (i <= STATIC_COUNT) {
          const e = STATIC_TABLE[i - 1]!;
          name = e[0];
          value = e[1];
        } else {
          const k = this.slot(i - STATIC_COUNT - 1, out);
          if (k < 0) { out.unknown++; continue; }
          name = this.names[k]!;
          value = this.values[k]!;
        }
        if (name === null || value === null) { out.unknown++; continue; }
        listSize += name.length + value.length + 32;
        if (listSize > this.listCap) out.oversize++;
        else out.push(name, value);
        continue;
      }
      if ((first & 0xe0) === 0x20) {
        // dynamic table size update (5-bit prefix)
        const v = this.readInt(b, p, end, 5);
        if (v < 0) { this.malformed(out, "bad integer"); return; }
        p = this.pos;
        if (fieldsSeen) out.error ??= "table size update after a field"; // RFC 7541 4.2; applied anyway
        this.sizeUpdate(v, out);
        continue;
      }
      let prefix: number;
      if (first & 0x40) { prefix = 6; index = true; }         // literal with incremental indexing
      else { prefix = 4; index = false; }                     // without indexing / never indexed
      const ni = this.readInt(b, p, end, prefix);
      if (ni < 0) { this.malformed(out, "bad integer"); return; }
      p = this.pos;
      fieldsSeen = true;
      let nameLen = 0;
      if (ni === 0) {
        name = this.readString(b, p, end, out);
        if (this.pos < 0) { this.malformed(out, "bad string length"); return; }
        nameLen = this.strLen;
        p = this.pos;
      } else if (ni <= STATIC_COUNT) {
        name = STATIC_TABLE[ni - 1]![0];
        nameLen = name.length;
      } else {
        const k = this.slot(ni - STATIC_COUNT - 1, out);
        name = k < 0 ? null : this.names[k]!;
        nameLen = k < 0 ? 0 : this.nameLens[k]!;
      }
      value = this.readString(b, p, end, out);
      if (this.pos < 0) { this.malformed(out, "bad string length"); return; }
      p = this.pos;
      const valueLen = this.strLen;
      if (index) this.insert(name, value, nameLen, nameLen + valueLen + 32);
      if (name === null || value === null) { out.unknown++; continue; }
      listSize += nameLen + valueLen + 32;
      if (listSize > this.listCap) out.oversize++;
      else out.push(name, value);
    }
  }

  // ------------------------------------------------------------------ internals

  private pos = 0;
  private strLen = 0;

  /** HPACK integer at b[p] with an N-bit prefix; sets this.pos after it. -1 when malformed. */
  private readInt(b: Uint8Array, p: number, end: number, bits: number): number {
    const max = (1 << bits) - 1;
    let v = b[p++]! & max;
    if (v < max) { this.pos = p; return v; }
    let m = 1;
    for (;;) {
      if (p >= end) return -1;
      const c = b[p++]!;
      v += (c & 0x7f) * m;
      if (v >= MAX_INT) return -1;
      if ((c & 0x80) === 0) break;
      m *= 128;
    }
    this.pos = p;
    return v;
  }

  /** A string literal at b[p]; sets this.pos after it (-1 when it overruns the block) and
   * this.strLen to its decoded octet length. Returns null when its Huffman coding is invalid. */
  private readString(b: Uint8Array, p: number, end: number, out: HeaderBlock): string | null {
    if (p >= end) { this.pos = -1; return null; }
    const huff = (b[p]! & 0x80) !== 0;
    const n = this.readInt(b, p, end, 7);
    if (n < 0 || this.pos + n > end) { this.pos = -1; return null; }
    const s = this.pos;
    this.pos = s + n;
    if (!huff) {
      this.strLen = n;
      return octetsToString(b, s, s + n);
    }
    const need = Math.ceil((n * 8) / 5) + 1;
    if (this.scratch.length < need) this.scratch = new Uint8Array(Math.max(need, this.scratch.length * 2));
    const len = huffmanDecode(b, s, s + n, this.scratch);
    if (len < 0) {
      out.huffmanErrors++;
      this.strLen = 0;
      return null;
    }
    this.strLen = len;
    return octetsToString(this.scratch, 0, len);
  }

  /** Ring slot of dynamic entry d, or -1 when it is not held (unknown, or counted as an error). */
  private slot(d: number, out: HeaderBlock): number {
    if (d < this.len) return (this.head + this.len - 1 - d) & (this.names.length - 1);
    if (this.tailKnown) {
      // Past the encoder's table as we know it: a broken encoder, or our state is off. Either
      // way no guess; from here on the tail counts as unknown.
      out.error ??= "index past the dynamic table";
      this.tailKnown = false;
    }
    return -1;
  }

  private malformed(out: HeaderBlock, reason: string): void {
    out.error = reason;
    this.forget();
  }

  private sizeUpdate(v: number, out: HeaderBlock): void {
    out.sizeUpdates++;
    if (this.settingBound !== undefined && v > this.settingBound) out.sizeUpdateAboveSetting = true;
    this.maxSize = v;
    this.maxKnown = true;
    while (this.held > v && this.len > 0) this.dropOldest(false);
    if (this.held + 32 > v) this.tailKnown = true;
  }

  private insert(name: string | null, value: string | null, nameLen: number, size: number): void {
    if (this.maxKnown && size > this.maxSize) {
      // RFC 7541 4.4: an entry larger than the table empties it and is not added.
      this.clear();
      this.tailKnown = true;
      return;
    }
    // Evictions the encoder makes too (our sizes are lower bounds: it evicts at least these).
    if (this.maxKnown) while (this.held + size > this.maxSize && this.len > 0) this.dropOldest(false);
    // Evictions only our bounds make: the encoder still holds those entries.
    while (this.held + size > this.memCap && this.len > 0) this.dropOldest(true);
    const mem = this.memory;
    while (mem.used + size > mem.limit && this.len > 0) this.dropOldest(true);
    if (this.held + size > this.memCap || mem.used + size > mem.limit) {
      // Cannot hold even this one entry: everything is unknown until the tail is known again.
      this.tailKnown = false;
      return;
    }
    if (this.len === this.names.length) this.grow();
    const k = (this.head + this.len) & (this.names.length - 1);
    this.names[k] = name;
    this.values[k] = value;
    this.nameLens[k] = nameLen;
    this.sizes[k] = size;
    this.len++;
    this.held += size;
    mem.used += size;
    if (!this.tailKnown && this.maxKnown && this.held + 32 > this.maxSize) this.tailKnown = true;
  }

  private dropOldest(unknownTail: boolean): void {
    const k = this.head;
    const s = this.sizes[k]!;
    this.names[k] = this.values[k] = null;
    this.head = (this.head + 1) & (this.names.length - 1);
    this.len--;
    this.held -= s;
    this.memory.used -= s;
    if (unknownTail) this.tailKnown = false;
  }

  private clear(): void {
    this.memory.used -= this.held;
    this.held = 0;
    this.len = 0;
    this.head = 0;
    this.names.fill(null);
    this.values.fill(null);
  }

  private grow(): void {
    const cap = this.names.length;
    const names: (string | null)[] = new Array(cap * 2);
    const values: (string | null)[] = new Array(cap * 2);
    const sizes: number[] = new Array(cap * 2);
    const nameLens: number[] = new Array(cap * 2);
    for (let i = 0; i < this.len; i++) {
      const k = (this.head + i) & (cap - 1);
      names[i] = this.names[k]!;
      values[i] = this.values[k]!;
      sizes[i] = this.sizes[k]!;
      nameLens[i] = this.nameLens[k]!;
    }
    this.nameLens = nameLens;
    this.names = names;
    this.values = values;
    this.sizes = sizes;
    this.head = 0;
  }
}
