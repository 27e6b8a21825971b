/** Endpoint parsing, headers, retry policy and error classification of the OTLP exporter. */
import { describe, expect, test } from "bun:test";
import { validateConfig } from "../../src/config/config.ts";
import { isLoopbackHost, parseEndpoint } from "../../src/export/otlp/endpoint.ts";
import { backoffDelay, DEFAULT_BACKOFF, isRetryableStatus, parseRetryAfter, retryDelay } from "../../src/export/otlp/retry.ts";
import { classifyError, isTlsCode } from "../../src/export/otlp/failure.ts";
import { requestHeaders } from "../../src/export/otlp/settings.ts";

describe("parseEndpoint", () => {
  test("schemes, bare host:port, base paths", () => {
    expect(parseEndpoint("https://collector:4318", true)).toMatchObject({ origin: "https://collector:4318", path: "/v1/traces", secure: true, hostname: "collector", port: 4318 });
    expect(parseEndpoint("collector.example:443", true)).toMatchObject({ origin: "https://collector.example", path: "/v1/traces", secure: true, port: 443 });
    expect(parseEndpoint("collector:4318", false)).toMatchObject({ origin: "http://collector:4318", secure: false });
    expect(parseEndpoint("https://gw/otlp/", true).path).toBe("/otlp/v1/traces");
    expect(parseEndpoint("https://gw:9/v1/traces", true).path).toBe("/v1/traces");
    expect(parseEndpoint("[::1]:4318", true)).toMatchObject({ hostname: "::1", port: 4318 });
    expect(parseEndpoint("https://h", true).port).toBe(443);
    expect(parseEndpoint("https://h:1", false).secure).toBe(true); // an explicit https:// stays TLS
  });
  test("errors name the key", () => {
    expect(() => parseEndpoint("", true)).toThrow(/agent_config.reporting.endpoint.*empty/);
    expect(() => parseEndpoint("http://h:1", true)).toThrow(/secure is true/);
    expect(() => parseEndpoint("grpc://h:1", true)).toThrow(/not supported/);
    expect(() => parseEndpoint("https://", true)).toThrow(/not a valid URL/);
  });
  test("loopback hosts", () => {
    for (const h of ["localhost", "127.0.0.1", "127.1.2.3", "::1", "a.localhost"]) expect(isLoopbackHost(h)).toBe(true);
    for (const h of ["10.0.0.1", "collector", "128.0.0.1"]) expect(isLoopbackHost(h)).toBe(false);
  });
});

describe("requestHeaders", () => {
  test("token, extra headers (lower-cased) and user agent; reserved names refused", () => {
    const cfg = validateConfig({ agent_config: { reporting: { agent_token: "t0k", headers: { "X-Org": "acme" } } } }, "", "");
    expect(requestHeaders(cfg)).toEqual({ "user-agent": expect.stringMatching(/^ebpf-tracer\/\d/), "x-org": "acme", "traceableai-agent-token": "t0k" });
    const bad = validateConfig({ agent_config: { reporting: { headers: { "Content-Type": "text/plain" } } } }, "", "");
    expect(() => requestHeaders(bad)).toThrow(/set by the exporter/);
    const badName = validateConfig({ agent_config: { reporting: { headers: { "a b": "x" } } } }, "", "");
    expect(() => requestHeaders(badName)).toThrow(/not a valid HTTP header name/);
  });
});

describe("retry policy", () => {
  test("retryable statuses", () => {
    for (const s of [429, 502, 503, 504]) expect(isRetryableStatus(s)).toBe(true);
    for (const s of [400, 401, 403, 404, 413, 500, 501]) expect(isRetryableStatus(s)).toBe(false);
  });
  test("Retry-After: seconds, HTTP date, garbage", () => {
    const now = Date.parse("2025-01-01T00:00:00Z");
    expect(parseRetryAfter("5", now)).toBe(5000);
    expect(parseRetryAfter(" 0 ", now)).toBe(0);
    expect(parseRetryAfter("Wed, 01 Jan 2025 00:00:30 GMT", now)).toBe(30_000);
    expect(parseRetryAfter("Tue, 31 Dec 2024 00:00:00 GMT", now)).toBe(0);
    expect(parseRetryAfter("soon", now)).toBeUndefined();
    expect(parseRetryAfter("-1", now)).toBeUndefined();
    expect(parseRetryAfter(null, now)).toBeUndefined();
  });
  test("exponential backoff with jitter, capped; Retry-After wins but is capped", () => {
    const p = DEFAULT_BACKOFF;
    expect(backoffDelay(0, p, () => 0)).toBe(500);
    expect(backoffDelay(0, p, () => 1)).toBe(1000);
    expect(backoffDelay(3, p, () => 0)).toBe(4000);
    expect(backoffDelay(50, p, () => 1)).toBe(30_000);
    const samples = new Set(Array.from({ length: 20 }, () => backoffDelay(2, p)));
    expect(samples.size).toBeGreaterThan(1);
    expect(retryDelay(0, 7000, p)).toBe(7000);
    expect(retryDelay(0, 3_600_000, p)).toBe(300_000);
  });
});

describe("classifyError", () => {
  const err = (code: string, message = code, cause?: unknown) => Object.assign(new Error(message, { cause }), { code });
  test("TLS codes anywhere in the cause chain", () => {
    expect(classifyError(err("UND_ERR_CONNECT", "x", err("CERT_HAS_EXPIRED", "certificate has expired")))).toEqual({ kind: "tls", code: "CERT_HAS_EXPIRED", message: "certificate has expired" });
    for (const c of ["UNABLE_TO_VERIFY_LEAF_SIGNATURE", "ERR_TLS_CERT_ALTNAME_INVALID", "SELF_SIGNED_CERT_IN_CHAIN", "ERR_SSL_TLSV1_ALERT_CERTIFICATE_REQUIRED", "ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE"]) {
      expect(isTlsCode(c)).toBe(true);
    }
    expect(isTlsCode("ECONNREFUSED")).toBe(false);
  });
  test("timeouts and network errors", () => {
    expect(classifyError(err("UND_ERR_HEADERS_TIMEOUT")).kind).toBe("timeout");
    expect(classifyError(Object.assign(new Error("t"), { name: "TimeoutError" })).kind).toBe("timeout");
    expect(classifyError(err("ECONNREFUSED", "connect ECONNREFUSED 127.0.0.1:1"))).toEqual({ kind: "network", code: "ECONNREFUSED", message: "connect ECONNREFUSED 127.0.0.1:1" });
    expect(classifyError("weird").kind).toBe("network");
  });
});
