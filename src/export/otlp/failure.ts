/**
 * Classifies a failed request: TLS (certificate or handshake problems), timeout, or other network
 * errors, with the most precise error code found along the `cause` chain (undici wraps errors).
 */
export type FailureKind = "tls" | "network" | "timeout";

export interface Failure {
  kind: FailureKind;
  /** e.g. UNABLE_TO_VERIFY_LEAF_SIGNATURE, ERR_TLS_CERT_ALTNAME_INVALID, ECONNREFUSED, UND_ERR_SOCKET */
  code: string;
  message: string;
}

const TLS_CODES = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE", "UNABLE_TO_GET_ISSUER_CERT", "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN", "DEPTH_ZERO_SELF_SIGNED_CERT", "CERT_HAS_EXPIRED", "CERT_NOT_YET_VALID",
  "CERT_REVOKED", "CERT_UNTRUSTED", "CERT_REJECTED", "CERT_SIGNATURE_FAILURE", "INVALID_CA", "INVALID_PURPOSE",
  "HOSTNAME_MISMATCH", "ERR_TLS_CERT_ALTNAME_INVALID", "ERR_TLS_HANDSHAKE_TIMEOUT", "EPROTO",
]);

export function isTlsCode(code: string): boolean {
  return TLS_CODES.has(code) || /^ERR_SSL_|^ERR_TLS_|CERT|_SSL_|TLSV1?_ALERT/.test(code);
}

const TIMEOUT_CODES = new Set(["UND_ERR_HEADERS_TIMEOUT", "UND_ERR_BODY_TIMEOUT", "UND_ERR_CONNECT_TIMEOUT", "ETIMEDOUT", "TimeoutError"]);

interface ErrLike {
  code?: unknown;
  name?: unknown;
  message?: unknown;
  cause?: unknown;
}

/** Errors from the outermost to the innermost cause. */
function errorChain(e: unknown): ErrLike[] {
  const out: ErrLike[] = [];
  let cur: unknown = e;
  while (cur && typeof cur === "object" && out.length < 8) {
    out.push(cur as ErrLike);
    cur = (cur as ErrLike).cause;
  }
  if (out.length === 0) out.push({ message: String(e) });
  return out;
}

export function classifyError(e: unknown): Failure {
  const chain = errorChain(e);
  for (const err of chain) {
    const code = typeof err.code === "string" ? err.code : "";
    if (code && isTlsCode(code)) return { kind: "tls", code, message: String(err.message ?? code) };
  }
  for (const err of chain) {
    const code = typeof err.code === "string" ? err.code : "";
    const name = typeof err.name === "string" ? err.name : "";
    if (TIMEOUT_CODES.has(code) || name === "TimeoutError") {
      return { kind: "timeout", code: code || name, message: String(err.message ?? name) };
    }
  }
  const inner = chain.find((x) => typeof x.code === "string") ?? chain[0]!;
  const code = typeof inner.code === "string" ? inner.code : typeof inner.name === "string" ? inner.name : "ERROR";
  return { kind: "network", code, message: String(inner.message ?? code) };
}

/** undici's "other side closed" before any response byte: on TLS this may hide a refused client cert. */
export function isClosedBeforeResponse(e: unknown): boolean {
  return errorChain(e).some((x) => {
    if (x.code !== "UND_ERR_SOCKET") return false;
    const sock = (x as { socket?: { bytesRead?: number } }).socket;
    return !sock || !sock.bytesRead;
  });
}
