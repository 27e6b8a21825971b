/**
 * One POST of one encoded batch, turned into an outcome the exporter acts on. Never throws.
 *   ok      2xx; may carry a partial success (rejected spans + message)
 *   retry   network, TLS or timeout error, or HTTP 429/502/503/504 (with Retry-After if given)
 *   reject  any other HTTP status: final, the batch is dropped and counted
 */
import type { EncodedBatch } from "./batch.ts";
import { contentEncodingOf, contentTypeOf, decompress } from "./batch.ts";
import type { OtlpSettings } from "./settings.ts";
import type { Transport } from "./transport.ts";
import { classifyError, isClosedBeforeResponse, type Failure } from "./failure.ts";
import { decodePartialSuccess, type PartialSuccess } from "./response.ts";
import { isRetryableStatus, parseRetryAfter } from "./retry.ts";
import { probeTls } from "./tls-probe.ts";

export interface HttpFailure {
  kind: "http";
  code: string; // "HTTP 503"
  message: string;
}

export type SendOutcome =
  | { type: "ok"; partial?: PartialSuccess }
  | { type: "retry"; failure: Failure | HttpFailure; status?: number; retryAfterMs?: number }
  | { type: "reject"; status: number; message: string };

function batchHeaders(s: OtlpSettings, b: EncodedBatch): Record<string, string> {
  const h: Record<string, string> = { ...s.headers, "content-type": contentTypeOf(b.encoding) };
  const ce = contentEncodingOf(b.compression);
  if (ce !== undefined) h["content-encoding"] = ce;
  return h;
}

function bodyText(body: Uint8Array, headers: Record<string, string>): string {
  let raw = body;
  try {
    const ce = headers["content-encoding"];
    if (ce === "gzip" || ce === "zstd") raw = decompress(body, ce);
  } catch {
    // keep raw
  }
  return new TextDecoder().decode(raw.subarray(0, 512)).replace(/\s+/g, " ").trim();
}

function timeoutError(ms: number): Error {
  return Object.assign(new Error(`no answer within ${ms} ms (agent_config.reporting.request_timeout)`), { name: "TimeoutError", code: "ETIMEDOUT" });
}

async function failureOf(e: unknown, t: Transport, s: OtlpSettings): Promise<Failure> {
  const f = classifyError(e);
  if (f.kind === "network" && t.endpoint.secure && isClosedBeforeResponse(e)) {
    const probed = await probeTls(t.endpoint, t.tls, Math.min(s.requestTimeoutMs, 5000));
    if (probed) return probed;
  }
  return f;
}

/** Posts `b`; `abort` cancels it (shutdown). The request timeout is applied here too. */
export async function sendBatch(t: Transport, s: OtlpSettings, b: EncodedBatch, abort: AbortController): Promise<SendOutcome> {
  const timer = setTimeout(() => abort.abort(timeoutError(s.requestTimeoutMs)), s.requestTimeoutMs);
  try {
    const ans = await t.post(batchHeaders(s, b), b.body, abort.signal, b.signal === "metrics" ? t.endpoint.metricsPath : t.endpoint.path);
    if (ans.status >= 200 && ans.status < 300) {
      const raw = ans.headers["content-encoding"] === "gzip" ? safeGunzip(ans.body) : ans.body;
      const ct = ans.headers["content-type"] ?? (b.encoding === "json" ? "application/json" : "application/x-protobuf");
      return { type: "ok", partial: decodePartialSuccess(raw, ct) };
    }
    const message = bodyText(ans.body, ans.headers);
    if (isRetryableStatus(ans.status)) {
      return {
        type: "retry", status: ans.status, retryAfterMs: parseRetryAfter(ans.headers["retry-after"]),
        failure: { kind: "http", code: `HTTP ${ans.status}`, message },
      };
    }
    return { type: "reject", status: ans.status, message };
  } catch (e) {
    const reason = abort.signal.aborted ? abort.signal.reason ?? e : e;
    return { type: "retry", failure: await failureOf(reason, t, s) };
  } finally {
    clearTimeout(timer);
  }
}

function safeGunzip(b: Uint8Array): Uint8Array {
  try {
    return Bun.gunzipSync(b as Uint8Array<ArrayBuffer>);
  } catch {
    return new Uint8Array(0);
  }
}
