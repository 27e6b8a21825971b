/**
 * HPACK Huffman coding (RFC 7541 section 5.2, code in Appendix B).
 *
 * The Appendix B code is canonical: codes of one length are consecutive in symbol order and each
 * length's first code follows the previous length's last. So the table below only lists each
 * symbol's code length (transcribed from Appendix B); the codes are rebuilt from it at load time
 * (checked against Appendix B's listed codes and the RFC examples in the tests).
 *
 * Decoding runs a 4-bit state machine built from the code tree: one table lookup per nibble, at
 * most one symbol per nibble (the shortest code is 5 bits). A string is rejected (not a throw: a
 * negative result) when it contains EOS, or when its padding is longer than 7 bits or not all ones
 * (section 5.2).
 */

/** Code length in bits of symbols 0..255 and EOS (256), from RFC 7541 Appendix B. */
// prettier-ignore
const LENGTHS = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //   0..15
  28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //  16..31
  6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,         //  ' '..'/'
  5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,              //  '0'..'?'
  13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,                //  '@'..'O'
  7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,             //  'P'..'_'
  15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,                //  '`'..'o'
  6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,            //  'p'..127
  20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 128..143
  24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 144..159
  22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 160..175
  21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 176..191
  26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 192..207
  19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 208..223
  20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 224..239
  26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 240..255
  30,                                                             // EOS
];

export const EOS = 256;

/** Canonical codes (right-aligned in `CODES`, length in `LENGTHS`). */
export const CODES = new Uint32Array(257);
export const CODE_LENGTHS = Uint8Array.from(LENGTHS);
{
  const order = Array.from({ length: 257 }, (_, s) => s).sort((a, b) => LENGTHS[a]! - LENGTHS[b]! || a - b);
  let code = 0;
  let len = LENGTHS[order[0]!]!;
  for (let k = 0; k < order.length; k++) {
    const s = order[k]!;
    const l = LENGTHS[s]!;
    if (k > 0) code = (code + 1) * 2 ** (l - len);
    len = l;
    CODES[s] = code;
  }
}

// ------------------------------------------------------------------ decoder state machine

/**
 * Tree nodes: internal nodes are 0..255 (root 0); a child reference >= 0x1000 is a leaf holding
 * symbol (ref - 0x1000).
 */
const LEAF = 0x1000;
const child0: number[] = [-1];
const child1: number[] = [-1];
for (let s = 0; s <= EOS; s++) {
  let node = 0;
  const len = LENGTHS[s]!;
  const code = CODES[s]!;
  for (let b = len - 1; b >= 0; b--) {
    const bit = Math.floor(code / 2 ** b) & 1;
    const kids = bit ? child1 : child0;
    if (b === 0) { kids[node] = LEAF + s; break; }
    let next = kids[node]!;
    if (next === -1) {
      next = child0.length;
      child0.push(-1);
      child1.push(-1);
      kids[node] = next;
    }
    node = next;
  }
}

/**
 * Per (state, nibble): bits 0..8 next state, bits 9..17 emitted symbol + 1 (0 = none), bit 18
 * failure (EOS decoded). `ACCEPT[state]` = the bits since the last symbol are all ones and fewer
 * than 8, so the string may end there.
 */
const FSM = new Uint32Array(256 * 16);
const ACCEPT = new Uint8Array(256);
const FAIL = 1 << 18;
{
  // depth and all-ones property per internal node
  const depth = new Int32Array(child0.length);
  const ones = new Uint8Array(child0.length);
  ones[0] = 1;
  const queue = [0];
  while (queue.length > 0) {
    const n = queue.shift()!;
    for (const [kids, bit] of [[child0, 0], [child1, 1]] as const) {
      const c = kids[n]!;
      if (c >= 0 && c < LEAF) {
        depth[c] = depth[n]! + 1;
        ones[c] = ones[n]! & bit;
        queue.push(c);
      }
    }
  }
  for (let n = 0; n < child0.length; n++) ACCEPT[n] = ones[n] && depth[n]! < 8 ? 1 : 0;
  for (let n = 0; n < child0.length; n++) {
    for (let nib = 0; nib < 16; nib++) {
      let node = n;
      let sym = 0;
      let fail = 0;
      for (let b = 3; b >= 0; b--) {
        const c = ((nib >> b) & 1 ? child1 : child0)[node]!;
        if (c >= LEAF) {
          if (c - LEAF === EOS) { fail = FAIL; node = 0; break; }
          sym = c - LEAF + 1;
          node = 0;
        } else {
          node = c;
        }
      }
      FSM[n * 16 + nib] = node | (sym << 9) | fail;
    }
  }
}

/**
 * Decodes `src[start..end)` into `out` from offset 0. Returns the decoded length, or -1 for an
 * invalid string (EOS inside, bad padding). `out` must hold at least (end - start) * 8 / 5 bytes.
 */
export function huffmanDecode(src: Uint8Array, start: number, end: number, out: Uint8Array): number {
  let state = 0;
  let n = 0;
  for (let i = start; i < end; i++) {
    const byte = src[i]!;
    let t = FSM[state * 16 + (byte >> 4)]!;
    if (t & FAIL) return -1;
    if (t >> 9 & 0x1ff) out[n++] = (t >> 9 & 0x1ff) - 1;
    t = FSM[(t & 0x1ff) * 16 + (byte & 15)]!;
    if (t & FAIL) return -1;
    if (t >> 9 & 0x1ff) out[n++] = (t >> 9 & 0x1ff) - 1;
    state = t & 0x1ff;
  }
  return ACCEPT[state] ? n : -1;
}

/** Length in bytes of the Huffman encoding of `src`. */
export function huffmanEncodedLength(src: Uint8Array): number {
  let bits = 0;
  for (let i = 0; i < src.length; i++) bits += CODE_LENGTHS[src[i]!]!;
  return Math.ceil(bits / 8);
}

/** Huffman-encodes `src` (padding with the most significant bits of EOS, i.e. ones). */
export function huffmanEncode(src: Uint8Array): Uint8Array {
  const out = new Uint8Array(huffmanEncodedLength(src));
  let acc = 0;   // pending bits, right-aligned
  let nbits = 0;
  let o = 0;
  for (let i = 0; i < src.length; i++) {
    const s = src[i]!;
    let len = CODE_LENGTHS[s]!;
    const code = CODES[s]!;
    // feed at most 8 bits at a time so `acc` stays within 32-bit integer range
    while (len > 0) {
      const take = len > 8 ? 8 : len;
      const part = Math.floor(code / 2 ** (len - take)) & ((1 << take) - 1);
      acc = (acc << take) | part;
      nbits += take;
      len -= take;
      while (nbits >= 8) {
        nbits -= 8;
        out[o++] = (acc >> nbits) & 0xff;
      }
      acc &= (1 << nbits) - 1;
    }
  }
  if (nbits > 0) out[o++] = ((acc << (8 - nbits)) | ((1 << (8 - nbits)) - 1)) & 0xff;
  return out;
}
