/**
 * Reads ExportTraceServiceResponse.partial_success {rejected_spans = 1, error_message = 2}
 * from a collector's answer, protobuf or OTLP/JSON. Unknown fields are skipped; anything
 * unreadable counts as "no partial success" (the request itself was accepted).
 */
export interface PartialSuccess {
  rejectedSpans: number;
  errorMessage: string;
}

class Reader {
  pos = 0;
  constructor(readonly b: Uint8Array) {}
  get done(): boolean {
    return this.pos >= this.b.length;
  }
  varint(): number {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.b.length) throw new Error("truncated varint");
      const byte = this.b[this.pos++]!;
      result += (byte & 0x7f) * mul;
      if (byte < 0x80) return result;
      mul *= 128;
    }
    throw new Error("varint too long");
  }
  bytes(): Uint8Array {
    const n = this.varint();
    if (this.pos + n > this.b.length) throw new Error("truncated field");
    const out = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.pos += 8;
    else if (wire === 2) this.bytes();
    else if (wire === 5) this.pos += 4;
    else throw new Error(`unsupported wire type ${wire}`);
    if (this.pos > this.b.length) throw new Error("truncated field");
  }
}

function readPartial(bytes: Uint8Array): PartialSuccess {
  const r = new Reader(bytes);
  const out: PartialSuccess = { rejectedSpans: 0, errorMessage: "" };
  while (!r.done) {
    const tag = r.varint();
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (field === 1 && wire === 0) {
      const v = r.varint();
      out.rejectedSpans = v >= 2 ** 63 ? v - 2 ** 64 : v; // int64
    } else if (field === 2 && wire === 2) out.errorMessage = new TextDecoder().decode(r.bytes());
    else r.skip(wire);
  }
  return out;
}

function decodePartialSuccessProto(bytes: Uint8Array): PartialSuccess | undefined {
  const r = new Reader(bytes);
  let found: PartialSuccess | undefined;
  while (!r.done) {
    const tag = r.varint();
    if (tag === ((1 << 3) | 2)) found = readPartial(r.bytes());
    else r.skip(tag & 7);
  }
  return found;
}

function decodePartialSuccessJson(text: string): PartialSuccess | undefined {
  if (text.trim() === "") return undefined;
  const j = JSON.parse(text) as { partialSuccess?: { rejectedSpans?: string | number; errorMessage?: string } };
  const p = j?.partialSuccess;
  if (!p || typeof p !== "object") return undefined;
  return { rejectedSpans: Number(p.rejectedSpans ?? 0) || 0, errorMessage: String(p.errorMessage ?? "") };
}

/** undefined when the body is empty, has no partial_success, or cannot be read. */
export function decodePartialSuccess(body: Uint8Array, contentType: string): PartialSuccess | undefined {
  try {
    if (contentType.toLowerCase().includes("json")) return decodePartialSuccessJson(new TextDecoder().decode(body));
    return decodePartialSuccessProto(body);
  } catch {
    return undefined;
  }
}
