/**
 * Differential test against an independent HPACK implementation: Debian's python3-hpack (4.x).
 * Its encoder writes random header lists (dynamic table, Huffman, never-indexed fields, table
 * size changes) that our decoder must read exactly; our encoder's output must read back through
 * its decoder; every byte's Huffman code must equal its encoder's. Skipped, saying why, when
 * /usr/bin/python3 cannot import hpack (scripts/install-deps.sh installs python3-hpack).
 */
import { describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { HeaderBlock, HpackDecoder, HpackMemory } from "../../src/protocols/http2/hpack.ts";
import { HpackEncoder } from "../../src/protocols/http2/encoder.ts";
import { huffmanEncode } from "../../src/protocols/http2/huffman.ts";

const PY = "/usr/bin/python3";
const probe = spawnSync(PY, ["-c", "import hpack"], { encoding: "utf8" });
const skip = probe.status !== 0 ? `python3-hpack not importable by ${PY} (apt-get install -y python3-hpack)` : "";

function py(script: string, input: unknown): unknown {
  const r = spawnSync(PY, ["-c", script], { input: JSON.stringify(input), encoding: "utf8", maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout);
}

/** Deterministic random header lists shaped like API traffic, with non-ASCII and odd bytes. */
function lists(n: number): { fields: [string, string][]; tableSize?: number; sensitive: boolean }[] {
  let seed = 7;
  const rnd = (m: number): number => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % m;
  const names = [":method", ":path", ":authority", ":scheme", ":status", "content-type", "user-agent", "x-request-id", "cookie", "authorization", "x-custom-" + "z".repeat(40), "grpc-status", "date", "etag"];
  const values = ["GET", "POST", "/", "/api/v1/items?id=", "application/json", "application/grpc", "Mozilla/5.0 (X11; Linux x86_64)", "0", "14", "café ☕", "\u00ff\u00fe", "a".repeat(300), "Bearer xyz", ""];
  const out: { fields: [string, string][]; tableSize?: number; sensitive: boolean }[] = [];
  for (let i = 0; i < n; i++) {
    const fields: [string, string][] = [];
    const k = 1 + rnd(16);
    for (let j = 0; j < k; j++) fields.push([names[rnd(names.length)]!, values[rnd(values.length)]! + (rnd(3) === 0 ? String(rnd(1000)) : "")]);
    out.push({ fields, tableSize: rnd(25) === 0 ? [0, 256, 1024, 4096][rnd(4)] : undefined, sensitive: rnd(5) === 0 });
  }
  return out;
}

describe.skipIf(skip !== "")(`python3-hpack differential${skip ? ` (skipped: ${skip})` : ""}`, () => {
  test("our decoder reads python-hpack's encoding exactly", () => {
    const input = lists(2000);
    const wires = py(`
import sys, json, hpack
enc = hpack.Encoder()
out = []
for i, blk in enumerate(json.load(sys.stdin)):
    if blk.get("tableSize") is not None:
        enc.header_table_size = blk["tableSize"]
    fields = [hpack.NeverIndexedHeaderTuple(n, v) if blk["sensitive"] and j == 0 else (n, v) for j, (n, v) in enumerate(blk["fields"])]
    out.append(enc.encode(fields, huffman=(i % 2 == 0)).hex())
print(json.dumps(out))
`, input) as string[];
    const d = new HpackDecoder({ fromStart: true, memory: new HpackMemory(1 << 20) });
    const out = new HeaderBlock();
    for (let i = 0; i < input.length; i++) {
      const w = Uint8Array.from(Buffer.from(wires[i]!, "hex"));
      d.decode(w, 0, w.length, out);
      expect(out.error).toBeUndefined();
      expect(out.names.slice(0, out.count).map((n, j) => [n, out.values[j]])).toEqual(input[i]!.fields);
    }
  });

  test("python-hpack reads our encoding exactly", () => {
    const input = lists(2000);
    const enc = new HpackEncoder();
    const wires = input.map((blk, i) => {
      if (blk.tableSize !== undefined) enc.setMaxSize(blk.tableSize);
      return Buffer.from(enc.encode(blk.fields, { huffman: i % 3 === 0 ? true : i % 3 === 1 ? false : undefined, indexing: blk.sensitive ? "never" : i % 7 === 0 ? "none" : "incremental" })).toString("hex");
    });
    const decoded = py(`
import sys, json, hpack
dec = hpack.Decoder()
dec.max_allowed_table_size = 1 << 20
print(json.dumps([[list(h) for h in dec.decode(bytes.fromhex(w), raw=False)] for w in json.load(sys.stdin)]))
`, wires) as [string, string][][];
    expect(decoded).toEqual(input.map((b) => b.fields));
  });

  test("Huffman codes of every byte and of random strings match", () => {
    const strings: number[][] = Array.from({ length: 256 }, (_, b) => [b]);
    let seed = 3;
    for (let i = 0; i < 500; i++) strings.push(Array.from({ length: i % 40 }, () => ((seed = (seed * 69069 + 1) >>> 0) >>> 24)));
    const theirs = py(`
import sys, json
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
e = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
print(json.dumps([e.encode(bytes(s)).hex() for s in json.load(sys.stdin)]))
`, strings) as string[];
    expect(strings.map((s) => Buffer.from(huffmanEncode(Uint8Array.from(s))).toString("hex"))).toEqual(theirs);
  });
});
