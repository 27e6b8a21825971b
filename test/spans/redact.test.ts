import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, statSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultConfig, parseConfigText, type RedactConfig } from "../../src/config/config.ts";
import { luhnOk, MASK, normalizeField, RedactingSink, Redactor } from "../../src/spans/redact.ts";
import type { Attributes, Span, SpanSink } from "../../src/spans/span.ts";
import { TracerError } from "../../src/errors.ts";

const dir = mkdtempSync(join(tmpdir(), "et-redact-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function settings(o: Partial<RedactConfig> = {}): RedactConfig {
  return { ...defaultConfig().data_capture.redact, ...o };
}

function span(attrs: Attributes, resource: Attributes = {}): Span {
  return {
    traceId: "0".repeat(31) + "1",
    spanId: "0".repeat(15) + "1",
    name: `${attrs["http.request.method"] ?? "GET"} ${attrs["url.path"] ?? "/"}`,
    kind: "server",
    startTimeUnixNano: 1n,
    endTimeUnixNano: 2n,
    error: false,
    attributes: { "http.request.method": "GET", "url.path": "/", ...attrs },
    resource: { "service.name": "t", ...resource },
  };
}

function run(attrs: Attributes, o: Partial<RedactConfig> = {}, resource: Attributes = {}): { a: Attributes; s: Span; r: Redactor } {
  const r = new Redactor(settings(o));
  const s = span(attrs, resource);
  r.redact(s);
  return { a: s.attributes, s, r };
}

const JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzdmMtY2hlY2tvdXQifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ";

describe("headers", () => {
  test("Authorization keeps the scheme; Cookie keeps names; Set-Cookie keeps attributes", () => {
    const { a, r } = run({
      "http.request.header.authorization": "Bearer s3cr3t-token-value",
      "http.request.header.proxy-authorization": "Basic dXNlcjpwYXNz",
      "http.request.header.cookie": "session=abc123; theme=dark",
      "http.response.header.set-cookie": "sid=zzz999; Path=/; Expires=Wed, 21 Oct 2035 07:28:00 GMT; HttpOnly; Secure,lang=en; Max-Age=60",
      "http.request.header.x-api-key": "key-0123456789",
      "http.request.header.x-vault-token": "hvs.abcdef",
      "http.request.header.accept": "application/json",
    });
    expect(a["http.request.header.authorization"]).toBe(`Bearer ${MASK}`);
    expect(a["http.request.header.proxy-authorization"]).toBe(`Basic ${MASK}`);
    expect(a["http.request.header.cookie"]).toBe(`session=${MASK}; theme=${MASK}`);
    expect(a["http.response.header.set-cookie"]).toBe(`sid=${MASK}; Path=/; Expires=Wed, 21 Oct 2035 07:28:00 GMT; HttpOnly; Secure,lang=${MASK}; Max-Age=60`);
    expect(a["http.request.header.x-api-key"]).toBe(MASK);
    expect(a["http.request.header.x-vault-token"]).toBe(MASK);
    expect(a["http.request.header.accept"]).toBe("application/json");
    const listed = String(a["ebpf.redacted"]).split(",");
    expect(listed).toContain("http.request.header.authorization");
    expect(listed).toContain("http.response.header.set-cookie");
    expect(String(a["ebpf.redacted"])).not.toContain("abc123");
    expect(r.counters.RedactedHeaders).toBe(6);
    expect(r.counters.RedactedSpans).toBe(1);
  });

  test("configured header list (globs) replaces the default", () => {
    const { a } = run({ "http.request.header.authorization": "Bearer x", "http.request.header.x-my-secret-thing": "v" }, { headers: ["x-my-*"] });
    expect(a["http.request.header.authorization"]).toBe("Bearer x");
    expect(a["http.request.header.x-my-secret-thing"]).toBe(MASK);
  });

  test("Referer query parameters", () => {
    const { a } = run({ "http.request.header.referer": "https://shop/login?user=bob&password=hunter2" });
    expect(a["http.request.header.referer"]).toBe(`https://shop/login?user=bob&password=${MASK}`);
  });
});

describe("query and form", () => {
  test("matching names, case-insensitive, separators ignored; other keys kept", () => {
    const { a } = run({ "url.query": "user=bob&Password=hunter2&api_key=k1&apiKey=k2&X-Api-Key=k3&access_token=t&page=2&token_type=bearer&empty=" });
    expect(a["url.query"]).toBe(`user=bob&Password=${MASK}&api_key=${MASK}&apiKey=${MASK}&X-Api-Key=${MASK}&access_token=${MASK}&page=2&token_type=bearer&empty=`);
    expect(String(a["ebpf.redacted"])).toContain("url.query:Password");
  });
  test("percent-encoded names", () => {
    expect(run({ "url.query": "pass%77ord=x&a=1" }).a["url.query"]).toBe(`pass%77ord=${MASK}&a=1`);
  });
  test("form body", () => {
    const { a } = run({ "http.request.header.content-type": "application/x-www-form-urlencoded", "http.request.body": "username=bob&password=hunter2&client_secret=cs" });
    expect(a["http.request.body"]).toBe(`username=bob&password=${MASK}&client_secret=${MASK}`);
  });
  test("nothing to do leaves the same string", () => {
    const r = new Redactor(settings());
    const s = span({ "url.query": "include=items&page=3", "http.request.header.accept": "*/*" });
    r.redact(s);
    expect(s.attributes["url.query"]).toBe("include=items&page=3");
    expect(s.attributes["ebpf.redacted"]).toBeUndefined();
    expect(r.counters.RedactedSpans).toBe(0);
  });
});

describe("JSON bodies", () => {
  test("any depth, strings, numbers, objects; null/booleans kept; valid JSON out", () => {
    const body = JSON.stringify({
      user: "bob",
      password: "hunter2",
      nested: { deeper: [{ access_token: "at-1", refresh_token: "rt-1", expires_in: 3600 }], pin: 1 },
      client_secret: { a: 1, b: "x" },
      token_type: "Bearer",
      secret: null,
      "pass\u0077ord2": "z",
      otp: 123456,
    });
    const { a } = run({ "http.response.header.content-type": "application/json", "http.response.body": body });
    const out = JSON.parse(String(a["http.response.body"]));
    expect(out.user).toBe("bob");
    expect(out.password).toBe(MASK);
    expect(out.nested.deeper[0]).toEqual({ access_token: MASK, refresh_token: MASK, expires_in: 3600 });
    expect(out.client_secret).toBe(MASK);
    expect(out.token_type).toBe("Bearer");
    expect(out.secret).toBeNull();
    expect(out.password2).toBe(MASK);
    expect(out.otp).toBe(MASK);
    expect(String(a["ebpf.redacted"])).toContain("http.response.body:access_token");
  });
  test("escaped quotes inside values do not confuse the scanner", () => {
    const body = JSON.stringify({ note: 'he said "password": "x"', password: 'a"b\\c' });
    const out = JSON.parse(String(run({ "http.request.body": body }, { value_patterns: ["card_number"] }).a["http.request.body"]));
    expect(out.note).toBe('he said "password": "x"');
    expect(out.password).toBe(MASK);
  });
  test("a body truncated by the capture cap: the cut secret is masked to the end", () => {
    const full = JSON.stringify({ user: "bob", items: [{ a: 1 }], access_token: "abcdefghijklmnopqrstuvwxyz0123456789" });
    for (let cut = full.indexOf("access_token") + 16; cut < full.length; cut++) {
      const body = full.slice(0, cut);
      const out = String(run({ "http.response.body": body, "http.response.body.truncated": true }).a["http.response.body"]);
      expect(out).not.toContain("abcdefghij".slice(0, 3) + "d");
      expect(out).not.toMatch(/abcd|0123/);
    }
    // cut inside a nested object value
    const obj = '{"credentials":{"user":"u","pass":"abcdef';
    expect(String(run({ "http.request.body": obj }).a["http.request.body"])).toBe(`{"credentials":"${MASK}"`);
    // cut inside the key: nothing to mask, nothing lost
    expect(run({ "http.request.body": '{"a":1,"passw' }).a["http.request.body"]).toBe('{"a":1,"passw');
  });
  test("sniffed without a content type; not JSON bodies left alone", () => {
    expect(JSON.parse(String(run({ "http.request.body": ' {"token":"t"}' }).a["http.request.body"])).token).toBe(MASK);
    expect(run({ "http.response.body": "<p>password: x</p>" }).a["http.response.body"]).toBe("<p>password: x</p>");
  });
});

describe("command lines", () => {
  test("--name=v, --name v, NAME=v, in span and resource attributes", () => {
    const cl = "/usr/bin/node server.js --api-key=ak-123 --token tk-456 --port 8080 PASSWORD=pw DB_PASSWORD=x --verbose --password-stdin --secret";
    const { a, s } = run({ "process.command_line": cl }, {}, { "process.command_line": cl });
    const want = `/usr/bin/node server.js --api-key=${MASK} --token ${MASK} --port 8080 PASSWORD=${MASK} DB_PASSWORD=${MASK} --verbose --password-stdin --secret`;
    expect(a["process.command_line"]).toBe(want);
    expect(s.resource["process.command_line"]).toBe(want);
    expect(String(a["ebpf.redacted"])).toContain("process.command_line:api-key");
  });
});

describe("value patterns", () => {
  test("JWT in a header, path (span name follows) and body", () => {
    const { a, s } = run({ "url.path": `/reset/${JWT}`, "http.request.header.x-id": JWT, "http.request.body": JSON.stringify({ note: `token is ${JWT}` }) });
    expect(a["url.path"]).toBe(`/reset/${MASK}`);
    expect(s.name).toBe(`GET /reset/${MASK}`);
    expect(a["http.request.header.x-id"]).toBe(MASK);
    expect(JSON.parse(String(a["http.request.body"])).note).toBe(`token is ${MASK}`);
    expect(String(a["ebpf.redacted"])).toContain("url.path:<jwt>");
  });
  test("card numbers: Luhn and issuer checked; JSON numbers stay valid JSON", () => {
    expect(luhnOk("4111111111111111")).toBe(true);
    expect(luhnOk("4111111111111112")).toBe(false);
    const body = '{"cc":"4111 1111 1111 1111","n":5500000000000004,"order":4111111111111112,"ts":1714564800000123456,"amex":"378282246310005"}';
    const out = JSON.parse(String(run({ "http.request.body": body }, { value_patterns: ["card_number"] }).a["http.request.body"]));
    expect(out).toEqual({ cc: MASK, n: MASK, order: 4111111111111112, ts: 1714564800000123456, amex: MASK });
  });
  test("AWS keys, URL credentials, private keys", () => {
    const { a } = run({
      "http.request.header.x-note": "AKIAIOSFODNN7EXAMPLE",
      "http.request.body": "dsn=postgres://app:dbpass@db:5432/x",
      "http.response.body": "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
    });
    expect(a["http.request.header.x-note"]).toBe(MASK);
    expect(a["http.request.body"]).toBe(`dsn=postgres://app:${MASK}@db:5432/x`);
    expect(a["http.response.body"]).toBe(MASK);
  });
  test("patterns can be switched off; custom patterns with a secret group", () => {
    expect(run({ "http.request.header.x-note": JWT }, { value_patterns: [] }).a["http.request.header.x-note"]).toBe(JWT);
    const { a } = run({ "http.request.header.x-note": "ref=ORD-1234 emp=E99887" }, { custom_patterns: ["emp=(?<secret>E\\d+)"] });
    expect(a["http.request.header.x-note"]).toBe(`ref=ORD-1234 emp=${MASK}`);
  });
  test("bad patterns are config errors naming the key", () => {
    const e = (text: string) => {
      try {
        parseConfigText(text, "/etc/c.yaml");
      } catch (err) {
        return err as TracerError;
      }
      throw new Error("accepted");
    };
    expect(e("data_capture:\n  redact:\n    custom_patterns:\n      - 'ok'\n      - '(['\n").message).toMatch(/^\/etc\/c\.yaml:5: key "data_capture\.redact\.custom_patterns\[1\]": not a valid regular expression/);
    expect(e("data_capture:\n  redact:\n    custom_patterns: ['x*']\n").message).toContain("matches the empty string");
    expect(e("data_capture:\n  redact:\n    custom_patterns: ['(a+)+$']\n").message).toContain("exponential time");
    expect(e("data_capture:\n  redact:\n    value_patterns: [jwt, ssn]\n").message).toContain('key "data_capture.redact.value_patterns[1]": unknown pattern "ssn"');
    expect(e("data_capture:\n  redact:\n    headers: ['bad header']\n").message).toContain('"data_capture.redact.headers[0]"');
    expect(e("data_capture:\n  redact:\n    fields: ['*']\n").message).toContain('"data_capture.redact.fields[0]"');
    expect(e("data_capture:\n  redact:\n    mode: encrypt\n").message).toContain('"data_capture.redact.mode"');
  });
});

describe("hash mode", () => {
  test("the key file is created 0600; same value, same hash, across Redactors; different values differ", () => {
    const keyFile = join(dir, "sub", "redact.key");
    const h = (v: string) => String(run({ "http.request.header.authorization": `Bearer ${v}` }, { mode: "hash", key_file: keyFile }).a["http.request.header.authorization"]);
    const one = h("token-A");
    expect(one).toMatch(/^Bearer \[hmac:[0-9a-f]{16}\]$/);
    expect((statSync(keyFile).mode & 0o777).toString(8)).toBe("600");
    expect((statSync(join(dir, "sub")).mode & 0o777).toString(8)).toBe("700");
    expect(h("token-A")).toBe(one);
    expect(h("token-B")).not.toBe(one);
    // the same credential in a query and a body correlates with the header
    const { a } = run({ "url.query": "access_token=token-A", "http.request.body": '{"token":"token-A"}' }, { mode: "hash", key_file: keyFile });
    const hash = one.slice("Bearer ".length);
    expect(a["url.query"]).toBe(`access_token=${hash}`);
    expect(JSON.parse(String(a["http.request.body"])).token).toBe(hash);
    // another install (another key) gives another hash
    expect(String(run({ "http.request.header.authorization": "Bearer token-A" }, { mode: "hash", key_file: join(dir, "other.key") }).a["http.request.header.authorization"])).not.toBe(one);
  });
  test("hash markers are not re-redacted by patterns", () => {
    const keyFile = join(dir, "k2.key");
    const r = new Redactor(settings({ mode: "hash", key_file: keyFile, custom_patterns: ["[0-9a-f]{16}"] }));
    const s = span({ "http.request.header.authorization": "Bearer abc" });
    r.redact(s);
    expect(String(s.attributes["http.request.header.authorization"])).toMatch(/^Bearer \[hmac:[0-9a-f]{16}\]$/);
  });
  test("a key file readable by others is refused, naming the key", () => {
    const keyFile = join(dir, "loose.key");
    writeFileSync(keyFile, "x".repeat(32));
    chmodSync(keyFile, 0o644);
    expect(() => new Redactor(settings({ mode: "hash", key_file: keyFile }))).toThrow(/data_capture\.redact\.key_file.*owner only/);
  });
});

describe("RedactingSink", () => {
  test("redacts before the inner sink, adds counters, forwards update", () => {
    const got: Span[] = [];
    let updated = 0;
    const inner: SpanSink & { update(): void } = {
      export: (s) => got.push(s),
      shutdown: async () => {},
      stats: () => ({ SpansWritten: got.length }),
      update: () => void updated++,
    };
    const sink = RedactingSink.fromConfig(inner, defaultConfig());
    sink.export(span({ "http.request.header.authorization": "Bearer x" }));
    expect(got[0]!.attributes["http.request.header.authorization"]).toBe(`Bearer ${MASK}`);
    expect(sink.stats()).toMatchObject({ SpansWritten: 1, RedactedSpans: 1, RedactedHeaders: 1 });
    sink.update(defaultConfig());
    expect(updated).toBe(1);
    expect(sink.stats().RedactedSpans).toBe(1);
  });
  test("normalizeField", () => {
    expect(normalizeField("X-Api_Key.v")).toBe("xapikeyv");
  });
});
