/**
 * HTTP transport of the OTLP exporter: one undici Pool (keep-alive connections, at most
 * `connections` at a time) for the collector's origin, with the TLS material passed as
 * `connect: { ca, cert, key }`. Rebuilt, not mutated, when the TLS files are reloaded.
 *
 * Note: Bun resolves the bare specifier "undici" to a built-in stub whose Pool/Agent do nothing;
 * "undici/index.js" loads the real package from node_modules (and is bundled by bun build).
 */
import { Pool } from "undici/index.js";
import type { Endpoint } from "./endpoint.ts";
import type { TlsMaterial } from "./settings.ts";

export interface HttpAnswer {
  status: number;
  headers: Record<string, string>;
  body: Uint8Array;
}

/** Longest response body kept (partial-success messages, error texts). */
const MAX_RESPONSE_BYTES = 64 * 1024;

export class Transport {
  private readonly pool: Pool;

  constructor(
    readonly endpoint: Endpoint,
    readonly tls: TlsMaterial,
    connections: number,
    timeoutMs: number,
  ) {
    this.pool = new Pool(endpoint.origin, {
      connections,
      pipelining: 1,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      connectTimeout: Math.min(timeoutMs, 10_000),
      keepAliveTimeout: 30_000,
      connect: endpoint.secure ? { ca: tls.ca, cert: tls.cert, key: tls.key } : undefined,
    });
  }

  async post(headers: Record<string, string>, body: Uint8Array, signal: AbortSignal, path = this.endpoint.path): Promise<HttpAnswer> {
    const res = await this.pool.request({ path, method: "POST", headers, body, signal });
    const chunks: Uint8Array[] = [];
    let size = 0;
    for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
      if (size < MAX_RESPONSE_BYTES) chunks.push(chunk);
      size += chunk.length;
    }
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) out[k] = Array.isArray(v) ? v.join(", ") : v;
    return { status: res.statusCode, headers: out, body: Buffer.concat(chunks) };
  }

  /** Lets requests in progress finish, then closes the connections. */
  async close(): Promise<void> {
    await this.pool.close().catch(() => undefined);
  }

  /** Aborts everything now. */
  async destroy(): Promise<void> {
    await this.pool.destroy().catch(() => undefined);
  }
}
