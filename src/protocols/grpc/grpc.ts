/**
 * gRPC over HTTP/2 (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md): which
 * streams are gRPC calls, the service and method of a path, the status of the trailers, and the
 * length-prefixed message framing of DATA, counted per direction without keeping the payloads.
 */

/** `application/grpc`, optionally `+proto` / `+json` etc. or parameters. gRPC-Web is not gRPC here
 * (its trailers travel inside the body). */
export function isGrpcContentType(ct: string | undefined): boolean {
  if (ct === undefined || ct.length < 16) return false;
  if (ct.slice(0, 16).toLowerCase() !== "application/grpc") return false;
  const next = ct.charCodeAt(16);
  return ct.length === 16 || next === 0x2b /* + */ || next === 0x3b /* ; */ || next === 0x20;
}

/** "/pkg.Service/Method" → ["pkg.Service", "Method"]; undefined when the path is not of that form. */
export function splitGrpcPath(path: string | undefined): [string, string] | undefined {
  if (path === undefined || path.charCodeAt(0) !== 0x2f) return undefined;
  const slash = path.indexOf("/", 1);
  if (slash <= 1 || slash === path.length - 1 || path.indexOf("/", slash + 1) >= 0) return undefined;
  return [path.slice(1, slash), path.slice(slash + 1)];
}

/** `grpc-status` value → code, or undefined when it is not a decimal code. */
export function parseGrpcStatus(v: string | undefined): number | undefined {
  if (v === undefined || !/^\d{1,3}$/.test(v)) return undefined;
  return Number(v);
}

/** Server spans are errors for these codes (OpenTelemetry gRPC conventions); client spans for any non-zero. */
const SERVER_ERROR_CODES = new Set([2, 4, 12, 13, 14, 15]);
export function grpcIsError(code: number, client: boolean): boolean {
  return client ? code !== 0 : SERVER_ERROR_CODES.has(code);
}

export const GRPC_CODE_NAMES = [
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
  "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
];

/** grpc-message is percent-encoded (PROTOCOL-HTTP2.md); invalid escapes are kept as sent. */
export function decodeGrpcMessage(v: string): string {
  if (v.indexOf("%") < 0) return v;
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}

/**
 * Counts length-prefixed messages in one direction's DATA bytes: a 1-byte compressed flag, a
 * 4-byte big-endian length, the message. Bytes may arrive in any pieces. After a gap the framing
 * is unknown and counting stops (`lost`).
 */
export class GrpcMessageCounter {
  messages = 0;          // messages whose prefix was seen
  bytes = 0;             // message bytes announced by those prefixes
  compressed = 0;        // messages with the compressed flag set
  lost = false;
  malformed = false;     // a prefix flag other than 0/1
  private prefixPos = 0; // bytes of the current prefix seen (0..5); 5 = inside a message
  private flag = 0;
  private len = 0;
  private left = 0;      // message bytes still to come

  push(b: Uint8Array, s: number, e: number): void {
    if (this.lost || this.malformed) return;
    let p = s;
    while (p < e) {
      if (this.prefixPos === 5) {
        const n = Math.min(this.left, e - p);
        this.left -= n;
        p += n;
        if (this.left === 0) this.prefixPos = 0;
        continue;
      }
      const c = b[p++]!;
      if (this.prefixPos === 0) {
        if (c > 1) { this.malformed = true; return; }
        this.flag = c;
        this.len = 0;
      } else {
        this.len = this.len * 256 + c;
      }
      if (++this.prefixPos === 5) {
        this.messages++;
        this.bytes += this.len;
        if (this.flag) this.compressed++;
        this.left = this.len;
        if (this.left === 0) this.prefixPos = 0;
      }
    }
  }

  gap(): void { this.lost = true; }

  /** The stream ended inside a message or prefix. */
  get unfinished(): boolean { return this.prefixPos !== 0; }
}
