/**
 * The OTLP exporter's settings, derived from Config once at start and again on reload. Reading
 * the TLS files happens here, so a bad path or PEM fails setup (TracerError) with the key named.
 */
import { readFileSync } from "node:fs";
import * as tls from "node:tls";
import type { Config } from "../../config/config.ts";
import { TracerError } from "../../errors.ts";
import { parseEndpoint, type Endpoint } from "./endpoint.ts";
import type { Compression, OtlpEncoding } from "./batch.ts";
import { USER_AGENT } from "./scope.ts";

const AGENT_TOKEN_HEADER = "traceableai-agent-token";

export interface TlsMaterial {
  /** PEM texts; ca: the ca_cert_file bundle, else the system's CAs (undefined: the runtime's bundled roots) */
  ca?: string | string[];
  cert?: string;
  key?: string;
}

export interface OtlpSettings {
  endpoint: Endpoint;
  tls: TlsMaterial;
  /** the files the PEMs came from, for messages */
  tlsFiles: { ca: string; cert: string; key: string };
  /** headers sent with every request (token, user agent, extra headers) */
  headers: Record<string, string>;
  encoding: OtlpEncoding;
  compression: Compression;
  maxBatchSpans: number;
  maxBatchDelayMs: number;
  maxInFlight: number;
  maxQueueSpans: number;
  requestTimeoutMs: number;
  spoolDir: string;
  spoolMaxBytes: number;
  fallbackService: string;
}

function readPemFile(path: string, key: string, kind: "CERTIFICATE" | "PRIVATE KEY"): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    throw new TracerError("CONFIG", `key "${key}": cannot read ${path}: ${code}`, { key, file: path });
  }
  const marker = kind === "CERTIFICATE" ? /-----BEGIN CERTIFICATE-----/ : /-----BEGIN [A-Z ]*PRIVATE KEY-----/;
  if (!marker.test(text)) {
    throw new TracerError("CONFIG", `key "${key}": ${path} holds no PEM ${kind.toLowerCase()}`, { key, file: path });
  }
  return text;
}

function readTlsMaterial(cfg: Config): TlsMaterial {
  const a = cfg.agent_config;
  const r = a.reporting;
  const out: TlsMaterial = {};
  if (a.ca_cert_file) out.ca = readPemFile(a.ca_cert_file, "agent_config.ca_cert_file", "CERTIFICATE");
  else out.ca = systemCas();
  if (r.cert_file || r.key_file) {
    if (!r.cert_file || !r.key_file) {
      throw new TracerError("CONFIG", 'keys "agent_config.reporting.cert_file" and "key_file" go together (mutual TLS needs both)');
    }
    out.cert = readPemFile(r.cert_file, "agent_config.reporting.cert_file", "CERTIFICATE");
    out.key = readPemFile(r.key_file, "agent_config.reporting.key_file", "PRIVATE KEY");
  }
  return out;
}

/** The host's trust store (e.g. /etc/ssl/certs, SSL_CERT_FILE), read again on every reload. */
function systemCas(): string[] | undefined {
  try {
    const list = (tls as { getCACertificates?: (t: string) => string[] }).getCACertificates?.("system") ?? [];
    return list.length ? [...list] : undefined;
  } catch {
    return undefined;
  }
}

const RESERVED_HEADERS = new Set(["content-type", "content-encoding", "content-length", "host", "connection", "transfer-encoding"]);

export function requestHeaders(cfg: Config): Record<string, string> {
  const r = cfg.agent_config.reporting;
  const h: Record<string, string> = { "user-agent": USER_AGENT };
  for (const [k, v] of Object.entries(r.headers ?? {})) {
    const name = k.trim().toLowerCase();
    if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(name)) {
      throw new TracerError("CONFIG", `key "agent_config.reporting.headers.${k}": not a valid HTTP header name`, { key: `agent_config.reporting.headers.${k}` });
    }
    if (RESERVED_HEADERS.has(name)) {
      throw new TracerError("CONFIG", `key "agent_config.reporting.headers.${k}": ${name} is set by the exporter`, { key: `agent_config.reporting.headers.${k}` });
    }
    if (/[\r\n]/.test(v)) throw new TracerError("CONFIG", `key "agent_config.reporting.headers.${k}": value has a line break`);
    h[name] = v;
  }
  if (r.agent_token) h[AGENT_TOKEN_HEADER] = r.agent_token;
  return h;
}

export function settingsFromConfig(cfg: Config): OtlpSettings {
  const a = cfg.agent_config;
  const r = a.reporting;
  const endpoint = parseEndpoint(r.endpoint, a.secure);
  return {
    endpoint,
    tls: endpoint.secure ? readTlsMaterial(cfg) : {},
    tlsFiles: { ca: a.ca_cert_file, cert: r.cert_file, key: r.key_file },
    headers: requestHeaders(cfg),
    encoding: r.encoding,
    compression: r.compression,
    maxBatchSpans: Math.max(1, r.max_batch_spans),
    maxBatchDelayMs: Math.max(1, r.max_batch_delay),
    maxInFlight: Math.max(1, r.max_in_flight),
    maxQueueSpans: Math.max(1, r.max_queue_spans),
    requestTimeoutMs: Math.max(1, r.request_timeout),
    spoolDir: cfg.spool.path,
    spoolMaxBytes: Math.max(0, cfg.spool.max_size_mb) * 1024 * 1024,
    fallbackService: cfg.service_name,
  };
}
