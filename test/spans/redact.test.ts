import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, statSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultConfig, parseConfigText, type RedactConfig } from "../../src/config/config.ts";
import { luhnOk, MASK, normalizeField, RedactingSink, Redactor } from "../../src/spans/redact.ts";
import { allAttributes, type Attributes, type Span, type SpanSink } from "../../src/spans/span.ts";
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

// ------------------------------------------------------------------ the pre-filters
// The field hint, the pattern trigger and the attribute-order plan only decide whether the exact
// scanners (JSON, name=value pairs, command lines, value patterns) run; they must never change
// what is redacted. Checked by example (names split by case, any run of separators, U+212A, JSON
// and percent escapes, secrets at the very start or end of a text, texts cut mid-token) and by a
// seeded differential fuzz against a Redactor whose pre-filters are forced to look at everything.

/** A Redactor whose pre-filters match every text: what the exact scanners alone redact. */
function exhaustive(o: Partial<RedactConfig> = {}): Redactor {
  const r = new Redactor(settings(o));
  const all = /[\s\S]/;
  Object.assign(r as unknown as Record<string, RegExp>, { fieldHint: all, escapeHint: all, trigger: all });
  return r;
}

function redactWith(r: Redactor, attrs: Attributes, resource: Attributes = {}): Span {
  const s = span(attrs, resource);
  r.redact(s);
  return s;
}

const body = (b: string, ct = "application/json"): Attributes => ({ "http.request.header.content-type": ct, "http.request.body": b });
const one = (attrs: Attributes) => run(attrs).a;

/** A seeded linear congruential generator: a failure names its seed. */
function lcg(seed: number): () => number {
  let x = seed & 0x7fffffff;
  return () => {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    return x / 0x80000000;
  };
}

describe("field hint: what normalizeField ignores, the hint ignores", () => {
  test("names split by case", () => {
    for (const k of ["PassWord", "aPiKeY", "ACCESS_TOKEN", "Client-Secret", "userPASSWORD", "SessionId"]) {
      expect(JSON.parse(String(one(body(JSON.stringify({ [k]: "s3cr3t" })))["http.request.body"]))[k]).toBe(MASK);
    }
  });
  test("any run of separators between letters (one at most was seen before)", () => {
    for (const k of ["pass--word", "api__key", "a.p.i.k.e.y", "PASS__WORD", "card-_-number", "to.-_ken"]) {
      expect(JSON.parse(String(one(body(JSON.stringify({ [k]: "s3cr3t" })))["http.request.body"]))[k]).toBe(MASK);
      expect(one({ "url.query": `a=1&${k}=s3cr3t` })["url.query"]).toBe(`a=1&${k}=${MASK}`);
    }
    expect(one({ "process.command_line": "/bin/app --pass--word=s3cr3t" })["process.command_line"]).toBe(`/bin/app --pass--word=${MASK}`);
  });
  test("U+212A KELVIN SIGN lower-cases to k, U+0130 to i + U+0307", () => {
    const kelvin = "to\u212Aen";
    expect(JSON.parse(String(one(body(JSON.stringify({ [kelvin]: "s3cr3t" })))["http.request.body"]))[kelvin]).toBe(MASK);
    expect(one({ "url.query": `ap\u0130=1&api\u212Aey=s3cr3t` })["url.query"]).toBe(`ap\u0130=1&api\u212Aey=${MASK}`);
    // "AUTHİ" normalizes to "authi\u0307": contains "auth", so it matches "*auth*"-like rules only;
    // with the default "auth" (exact) it is not a field, and nothing else is touched
    const dotted = JSON.stringify({ "x_AUTH\u0130": "keep", token: "s3cr3t" });
    expect(JSON.parse(String(one(body(dotted))["http.request.body"]))).toEqual({ "x_AUTH\u0130": "keep", token: MASK });
    const glob = redactWith(new Redactor(settings({ fields: ["*authi*"] })), body(JSON.stringify({ "x_AUTH\u0130": "s3cr3t" })));
    expect(JSON.parse(String(glob.attributes["http.request.body"]))["x_AUTH\u0130"]).toBe(MASK);
  });
  test("the only characters outside ASCII that lower-case to ASCII letters are U+0130 and U+212A", () => {
    // the hint handles exactly these; a Unicode update adding one must fail here
    const found: number[] = [];
    for (let cp = 0x80; cp <= 0x10ffff; cp++) {
      if (cp >= 0xd800 && cp <= 0xdfff) continue;
      const l = String.fromCodePoint(cp).toLowerCase();
      for (let i = 0; i < l.length; i++) {
        const c = l.charCodeAt(i);
        if ((c >= 97 && c <= 122) || (c >= 65 && c <= 90)) {
          found.push(cp);
          break;
        }
      }
    }
    expect(found).toEqual([0x130, 0x212a]);
  });
  test("JSON escapes in names", () => {
    const b = '{"\\u0070assword":"a","user_pass\\u0077ord":"b","\\u0041PI_KEY":"c","to\\u006ben":"d","note":"\\u0070"}';
    expect(JSON.parse(String(one(body(b))["http.request.body"]))).toEqual({ password: MASK, user_password: MASK, API_KEY: MASK, token: MASK, note: "p" });
  });
  test("percent-encoding in queries and forms", () => {
    expect(one({ "url.query": "%70assword=a&pass%77ord=b&api%5Fkey=c&q=%70" })["url.query"]).toBe(`%70assword=${MASK}&pass%77ord=${MASK}&api%5Fkey=${MASK}&q=%70`);
    const form = one(body("user=bob&%50ASSWORD=hunter2&x=1", "application/x-www-form-urlencoded"));
    expect(form["http.request.body"]).toBe(`user=bob&%50ASSWORD=${MASK}&x=1`);
  });
  test("a secret at the very start or end of a text", () => {
    expect(one(body('{"password":"x"}'))["http.request.body"]).toBe(`{"password":"${MASK}"}`);
    expect(one(body("password=x", "text/plain"))["http.request.body"]).toBe(`password=${MASK}`);
    expect(one({ "url.query": "token=x" })["url.query"]).toBe(`token=${MASK}`);
    expect(one({ "url.query": "a=1&token=x" })["url.query"]).toBe(`a=1&token=${MASK}`);
    expect(one(body(JWT, "text/plain"))["http.request.body"]).toBe(MASK);
    expect(one(body(`${JWT} trailing`, "text/plain"))["http.request.body"]).toBe(`${MASK} trailing`);
    expect(one(body(`leading ${JWT}`, "text/plain"))["http.request.body"]).toBe(`leading ${MASK}`);
    expect(one(body("AKIAIOSFODNN7EXAMPLE", "text/plain"))["http.request.body"]).toBe(MASK);
    expect(one({ "url.path": `/x/${JWT}` })["url.path"]).toBe(`/x/${MASK}`);
  });
  test("bodies cut mid-token", () => {
    // cut inside a key: nothing to mask, nothing lost
    expect(one(body('{"a":1,"pass'))["http.request.body"]).toBe('{"a":1,"pass');
    expect(one(body('{"a":1,"api_k'))["http.request.body"]).toBe('{"a":1,"api_k');
    // cut inside a secret value: masked to the end
    expect(one(body('{"a":1,"password":"hun'))["http.request.body"]).toBe(`{"a":1,"password":"${MASK}`);
    expect(one(body('{"api-KEY":  "abc'))["http.request.body"]).toBe(`{"api-KEY":  "${MASK}`);
    // a JWT cut in its signature still matches the pattern (header and payload complete)
    const cutJwt = JWT.slice(0, JWT.lastIndexOf(".") + 4);
    expect(one(body(`{"note":"${cutJwt}`))["http.request.body"]).toBe(`{"note":"${MASK}`);
    // a trigger cut before it is complete: nothing to find
    expect(one(body('{"note":"ey'))["http.request.body"]).toBe('{"note":"ey');
  });
  test("each AWS key prefix is seen by the trigger", () => {
    for (const p of ["AKIA", "ASIA", "ABIA", "ACCA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA", "APKA"]) {
      expect(one({ "url.query": `k=${p}IOSFODNN7EXAMPLE` })["url.query"]).toBe(`k=${MASK}`);
    }
  });
});

describe("attribute-order plan", () => {
  test("varied header sets and orders: each secret header is redacted", () => {
    const r = new Redactor(settings());
    const next = lcg(7);
    const rnd = (n: number) => Math.floor(next() * n);
    for (let i = 0; i < 3000; i++) {
      const attrs: Attributes = { "url.path": "/a" };
      const secretAt = rnd(6);
      for (let h = 0; h < 6; h++) {
        // many distinct names at each place (past the plan's bounds), some repeated
        const name = rnd(3) === 0 ? `x-h${h}` : `x-h${i}-${h}`;
        attrs[`http.request.header.${name}`] = "v";
        if (h === secretAt) attrs[rnd(2) ? "http.request.header.authorization" : "http.request.header.x-api-key"] = "Bearer s3cr3t";
      }
      const s = span(attrs);
      r.redact(s);
      for (const [k, v] of Object.entries(s.attributes)) expect(`${k}=${v}`).not.toContain("s3cr3t");
    }
  });
  test("the same keys in another order keep their own actions", () => {
    const r = new Redactor(settings());
    const a = redactWith(r, { "http.request.header.accept": "x", "http.request.header.authorization": "Bearer s", "url.query": "token=t" });
    const b = redactWith(r, { "url.query": "token=t", "http.request.header.authorization": "Bearer s", "http.request.header.accept": "x" });
    for (const s of [a, b]) {
      expect(s.attributes["http.request.header.authorization"]).toBe(`Bearer ${MASK}`);
      expect(s.attributes["url.query"]).toBe(`token=${MASK}`);
      expect(s.attributes["http.request.header.accept"]).toBe("x");
    }
  });
});

// ------------------------------------------------------------------ differential fuzz

const PIECES = ["pass", "word", "wd", "pwd", "sec", "ret", "tok", "en", "api", "key", "access", "private", "cred", "ential", "auth", "sess", "ion",
  "sid", "sign", "ature", "cvv", "cvc", "card", "number", "cc", "pan", "ssn", "otp", "user", "id", "name", "order", "total", "note", "items", "x"];
const SEPS = ["", "", "", "", "-", "_", ".", "--", "._", "__"];
/** the default field names, to be cut by separators and case */
const LITERALS = ["password", "passwd", "pwd", "secret", "token", "apikey", "accesskey", "privatekey", "credential", "auth", "authorization",
  "session", "sessionid", "sid", "signature", "cvv", "cvc", "cardnumber", "ccnumber", "pan", "ssn", "otp"];
const AWS = ["AKIA", "ASIA", "ABIA", "ACCA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA", "APKA"];
const VALUES = ["x", "hunter2", JWT, "AKIAIOSFODNN7EXAMPLE", "postgres://u:pw@db/x", "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----",
  "4111 1111 1111 1111", "5500000000000004", "plain text", "", "eyJ", "://", "A", "ref=ORD-1"];

function fuzzCase(rnd: () => number): { attrs: Attributes; resource: Attributes } {
  const pick = <T,>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const name = (): string => {
    let n = "";
    if (rnd() < 0.5) {
      // a field name with separators between its letters, maybe inside a longer name
      for (const ch of pick(LITERALS)) n += (n && rnd() < 0.25 ? pick(SEPS) : "") + ch;
      if (rnd() < 0.3) n = pick(PIECES) + pick(SEPS) + n;
      if (rnd() < 0.3) n += pick(SEPS) + pick(PIECES);
    } else {
      const parts = 1 + Math.floor(rnd() * 3);
      for (let i = 0; i < parts; i++) n += (i ? pick(SEPS) : "") + pick(PIECES);
    }
    let out = "";
    for (const ch of n) {
      const r = rnd();
      if (ch === "k" && r < 0.05) out += "\u212A";
      else if (ch === "i" && r < 0.05) out += "\u0130";
      else out += r < 0.3 ? ch.toUpperCase() : ch;
    }
    return out;
  };
  const jsonEscape = (s: string): string => {
    // sometimes a letter as \uXXXX, as some encoders write it
    let out = "";
    for (const ch of JSON.stringify(s).slice(1, -1)) out += rnd() < 0.08 && /[a-z]/i.test(ch) ? `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}` : ch;
    return out;
  };
  const value = (): string => {
    const r = rnd();
    if (r < 0.1) {
      let k = pick(AWS);
      while (k.length < 20) k += "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[Math.floor(rnd() * 32)];
      return k;
    }
    return value();
  };
  const pct = (s: string): string => {
    let out = "";
    for (const ch of s) out += rnd() < 0.1 && ch.charCodeAt(0) < 128 ? `%${ch.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0")}` : ch;
    return out;
  };
  const json = (depth: number): string => {
    const n = 1 + Math.floor(rnd() * 4);
    const parts: string[] = [];
    for (let i = 0; i < n; i++) {
      const r = rnd();
      const v = depth < 2 && r < 0.2 ? json(depth + 1) : r < 0.3 ? String(Math.floor(rnd() * 1e6)) : r < 0.35 ? "null" : `"${jsonEscape(value())}"`;
      parts.push(`"${jsonEscape(name())}"${rnd() < 0.2 ? " : " : ":"}${v}`);
    }
    return `{${parts.join(",")}}`;
  };
  const pairs = (): string => Array.from({ length: 1 + Math.floor(rnd() * 4) }, () => `${pct(name())}=${pct(value())}`).join("&");
  const cut = (s: string): string => (rnd() < 0.3 ? s.slice(0, Math.floor(rnd() * (s.length + 1))) : s);
  const attrs: Attributes = {};
  if (rnd() < 0.7) attrs["url.query"] = cut(pairs());
  if (rnd() < 0.5) attrs["url.path"] = `/api/${value()}/${Math.floor(rnd() * 1000)}`;
  const kind = rnd();
  if (kind < 0.5) Object.assign(attrs, body(cut(json(0)), rnd() < 0.5 ? "application/json" : ""));
  else if (kind < 0.75) Object.assign(attrs, body(cut(pairs()), rnd() < 0.5 ? "application/x-www-form-urlencoded" : ""));
  else if (kind < 0.9) Object.assign(attrs, body(cut(`${value()} ${name()}=${value()} ${value()}`), "text/plain"));
  if (rnd() < 0.5) attrs["http.response.body"] = cut(json(0));
  if (rnd() < 0.3) attrs["http.request.header.x-note"] = value() || "v";
  if (rnd() < 0.2) attrs["http.request.header.referer"] = `https://h/p?${pairs()}`;
  const resource: Attributes = {};
  if (rnd() < 0.3) attrs["process.command_line"] = resource["process.command_line"] = `/bin/app --${name()}=${value() || "v"} ${name().toUpperCase()}=v2 --${name()} ${value() || "v"}`;
  return { attrs, resource };
}

describe("differential fuzz: the pre-filters never change the result", () => {
  const configs: [string, Partial<RedactConfig>][] = [
    ["defaults", {}],
    ["all built-in patterns", { value_patterns: ["jwt", "card_number", "aws_access_key", "url_credentials", "private_key"] }],
    ["custom pattern and glob fields", { custom_patterns: ["ref=(?<secret>ORD-\\d+)"], fields: ["*word", "api*", "sid", "x-*-token"] }],
    ["no value patterns", { value_patterns: [] }],
  ];
  for (const [label, o] of configs) {
    test(label, () => {
      const fast = new Redactor(settings(o));
      const slow = exhaustive(o);
      for (let seed = 1; seed <= 1500; seed++) {
        const { attrs, resource } = fuzzCase(lcg(seed));
        const a = redactWith(fast, { ...attrs }, { ...resource });
        const b = redactWith(slow, { ...attrs }, { ...resource });
        const show = (s: Span) => JSON.stringify({ seed, name: s.name, attributes: s.attributes, resource: s.resource });
        expect(show(a)).toBe(show(b));
      }
      expect(fast.counters).toEqual(slow.counters);
      // the fuzz does reach the exact scanners (a test that cannot fail proves nothing)
      expect(fast.counters.RedactedFields).toBeGreaterThan(500);
    });
  }
});

describe("shared attributes (Span.shared)", () => {
  const configs: Partial<RedactConfig>[] = [{}, { custom_patterns: ["ref=(?<secret>ORD-\\d+)"], fields: ["*word", "api*", "sid", "x-*-token"] }, { mode: "hash", key_file: join(dir, "shared.key") }];
  test("a span whose connection attributes are shared is redacted as if they were its own; the shared object is never written", () => {
    let replaced = 0;
    for (const o of configs) {
      const flat = new Redactor(settings(o));
      const split = new Redactor(settings(o));
      for (let seed = 1; seed <= 1500; seed++) {
        const { attrs } = fuzzCase(lcg(seed));
        const cl = attrs["process.command_line"];
        delete attrs["process.command_line"];
        const shared = Object.freeze({ "url.scheme": "http", "client.port": 40000, "process.pid": 7, ...(cl !== undefined ? { "process.command_line": cl } : {}) });
        const a = span({ ...attrs });
        a.attributes = { ...a.attributes, ...shared };
        const b = span({ ...attrs });
        b.shared = shared;
        flat.redact(a);
        split.redact(b);
        expect(allAttributes(b)).toEqual(a.attributes);
        expect(Object.keys(b.attributes).filter((k) => k in b.shared!)).toEqual([]);
        expect(shared["process.command_line"]).toBe(cl);
        if (b.shared !== shared) {
          replaced++;
          expect(Object.isFrozen(b.shared)).toBe(true);
        }
      }
      expect(split.counters).toEqual(flat.counters);
    }
    // the fuzz reaches command lines with secrets (a test that cannot fail proves nothing)
    expect(replaced).toBeGreaterThan(100);
  });
});
