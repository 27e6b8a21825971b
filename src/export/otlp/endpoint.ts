/**
 * agent_config.reporting.endpoint → the URL the exporter posts to. `https://host:port[/base]`,
 * `http://host:port[/base]` (only with agent_config.secure: false) or bare `host:port`, which means
 * https (or http when secure is false). The path gets `/v1/traces` appended unless it ends with it.
 */
import { TracerError } from "../../errors.ts";

export interface Endpoint {
  /** scheme://host:port */
  origin: string;
  /** request path, e.g. /v1/traces */
  path: string;
  /** the same base with /v1/metrics, for metric batches */
  metricsPath: string;
  secure: boolean;
  hostname: string;
  port: number;
}

const KEY = "agent_config.reporting.endpoint";

export function parseEndpoint(endpoint: string, secure: boolean): Endpoint {
  const text = endpoint.trim();
  if (text === "") throw new TracerError("CONFIG", `key "${KEY}": is empty; give https://host:port or host:port`, { key: KEY });
  const hasScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(text);
  const withScheme = hasScheme ? text : `${secure ? "https" : "http"}://${text}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new TracerError("CONFIG", `key "${KEY}": "${endpoint}" is not a valid URL or host:port`, { key: KEY });
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new TracerError("CONFIG", `key "${KEY}": scheme ${url.protocol} is not supported (use https:// or http://)`, { key: KEY });
  }
  if (url.protocol === "http:" && secure) {
    throw new TracerError("CONFIG", `key "${KEY}": "${endpoint}" is plain http but agent_config.secure is true; use https:// or set agent_config.secure: false`, { key: KEY });
  }
  const isHttps = url.protocol === "https:";
  const port = url.port ? Number(url.port) : isHttps ? 443 : 80;
  const base = url.pathname.replace(/\/+$/, "");
  const path = base.endsWith("/v1/traces") ? base : `${base}/v1/traces`;
  const metricsPath = `${path.slice(0, -"/v1/traces".length)}/v1/metrics`;
  return { origin: `${url.protocol}//${url.host}`, path, metricsPath, secure: isHttps, hostname: url.hostname.replace(/^\[|\]$/g, ""), port };
}

export function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host) || host.endsWith(".localhost");
}
