/**
 * Redaction: the one place where secrets are removed from a span before it leaves the process
 * (stdout, file and OTLP alike: RedactingSink wraps whichever SpanSink was chosen). Pure apart
 * from the hash key file; every rule is compiled once when the Redactor is built.
 *
 * What is redacted (defaults in src/config/schema.ts, documented in docs/spans.md):
 * - header values named in `headers` (request and response), keeping the auth scheme of
 *   Authorization/Proxy-Authorization and the cookie names and attributes of Cookie/Set-Cookie;
 * - values of query parameters (url.query, and the query of Referer/Location headers), form
 *   fields and JSON fields at any depth (http.request.body / http.response.body) whose names
 *   match `fields`; JSON is read by a tolerant scanner, so a body cut by the capture cap is still
 *   covered (an unterminated secret value is masked to the end);
 * - process.command_line arguments `--name=v`, `--name v`, `NAME=v` whose name matches `fields`
 *   (span and resource attributes);
 * - values matching the built-in `value_patterns` and the `custom_patterns` anywhere in those
 *   attributes and in url.path (the span name follows a redacted path).
 *
 * A redacted value becomes MASK, or in hash mode `[hmac:<16 hex>]`: HMAC-SHA-256 of the value
 * with a per-install key, so the same credential correlates across spans and restarts without
 * being revealed. `ebpf.redacted` lists what was redacted (attribute and field names, never
 * values). The hot path allocates only when something is redacted; attribute keys are classified
 * once and cached.
 */
import { createHmac, randomBytes } from "node:crypto";
import { closeSync, fstatSync, mkdirSync, openSync, readSync, writeSync, fsyncSync } from "node:fs";
import { dirname } from "node:path";
import type { Config, RedactConfig } from "../config/config.ts";
import { TracerError } from "../errors.ts";
import type { Attributes, Span, SpanSink } from "./span.ts";

export const MASK = "[REDACTED]";
export const REDACTED_ATTR = "ebpf.redacted";
const HASH_PREFIX = "[hmac:";

// ------------------------------------------------------------------ name matching

/** Field names compare lower-case with "-", "_" and "." removed: api_key = apiKey = api-key. */
export function normalizeField(name: string): string {
  return name.toLowerCase().replace(/[-_.]/g, "");
}

/**
 * A regular expression source matching any of `words` with any run of separators between
 * letters (normalizeField removes them all: pass--word is password), factored as a trie
 * (p(?:ass…|wd)…): a backtracking engine then tries each text position against a handful of
 * first letters instead of every word. Meant for the "i" flag; "k" and "i" also take U+212A and
 * U+0130, the only characters outside ASCII that lower-case to ASCII letters (test/spans/redact.test.ts).
 */
function trieSource(words: string[]): string {
  interface Node { end?: boolean; next: Map<string, Node> }
  const root: Node = { next: new Map() };
  for (const w of words) {
    let n = root;
    for (const ch of w) {
      let m = n.next.get(ch);
      if (!m) n.next.set(ch, (m = { next: new Map() }));
      n = m;
    }
    n.end = true;
  }
  const emit = (n: Node, first: boolean): string => {
    if (n.end) return ""; // a shorter word already matches: the hint needs no more
    const alts = [...n.next].map(([ch, m]) => (first ? "" : "[-_.]*") + (NON_ASCII_LOWER[ch] ?? ch.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")) + emit(m, false));
    return alts.length === 1 ? alts[0]! : `(?:${alts.join("|")})`;
  };
  return emit(root, true);
}

/** Letters that a character outside ASCII lower-cases to, as a class holding both (İ gives "i\u0307"). */
const NON_ASCII_LOWER: Record<string, string> = { k: "[k\\u212a]", i: "[i\\u0130]" };

/** A set of exact names plus one regular expression for the wildcard ones; results cached. */
class NameMatcher {
  private readonly exact = new Set<string>();
  private readonly glob: RegExp | undefined;
  private cache: Record<string, boolean> = Object.create(null);
  private cached = 0;
  constructor(patterns: string[], private readonly norm: (s: string) => string) {
    const globs: string[] = [];
    for (const p of patterns) {
      const n = norm(p);
      if (n.includes("*")) globs.push(n.split("*").map((x) => x.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join(".*"));
      else this.exact.add(n);
    }
    this.glob = globs.length ? new RegExp(`^(?:${globs.join("|")})$`) : undefined;
  }
  /**
   * A case-insensitive test that is true for every text containing a name this matcher could
   * match (each literal part, separators allowed between letters). Cheaper than scanning the text
   * name by name, so texts without a candidate are skipped whole. Percent- or \u-escaped names
   * are not seen by it: callers scan texts holding "%" or "\\u" regardless; `also` are more
   * alternatives (those escapes, so one pass answers "anything to look at?"). When a literal holds
   * a character outside ASCII, any such character in the text is a candidate (lower-casing outside
   * ASCII is not what the "i" flag does).
   */
  hint(patterns: string[], also: string[] = []): RegExp {
    const parts = new Set<string>();
    for (const p of patterns) for (const seg of this.norm(p).split("*")) if (seg) parts.add(seg);
    const alts = [...also];
    if (parts.size) alts.unshift(trieSource([...parts]));
    if ([...parts].some((p) => /[^\x00-\x7f]/.test(p))) alts.push("[^\\x00-\\x7f]");
    return alts.length ? new RegExp(alts.join("|"), "i") : /(?!)/;
  }
  matches(name: string): boolean {
    let r = this.cache[name];
    if (r === undefined) {
      const n = this.norm(name);
      r = this.exact.has(n) || (this.glob !== undefined && this.glob.test(n));
      if (++this.cached > 4096) {
        this.cache = Object.create(null);
        this.cached = 1;
      }
      this.cache[name] = r;
    }
    return r;
  }
}

// ------------------------------------------------------------------ value patterns

interface ValuePattern {
  name: string;
  /** global; a match is a candidate */
  re: RegExp;
  /** only this capture group is secret (url_credentials, custom `(?<secret>…)`) */
  group?: number | string;
  /** rejects candidates (Luhn for card numbers) */
  accept?: (m: string) => boolean;
}

/** Luhn check over the digits of `s` (separators ignored). */
export function luhnOk(s: string): boolean {
  let sum = 0;
  let dbl = false;
  for (let i = s.length - 1; i >= 0; i--) {
    const c = s.charCodeAt(i) - 48;
    if (c < 0 || c > 9) continue;
    let d = c;
    if (dbl) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    dbl = !dbl;
  }
  return sum % 10 === 0;
}

/** Issuer prefixes and lengths of the major card schemes: Luhn alone passes 1 random number in 10. */
function cardCandidate(m: string): boolean {
  const d = m.replace(/[ -]/g, "");
  const n = d.length;
  if (n < 13 || n > 19) return false;
  const p2 = Number(d.slice(0, 2));
  const p4 = Number(d.slice(0, 4));
  const scheme =
    (d[0] === "4" && (n === 13 || n === 16 || n === 19)) || // Visa
    (((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)) && n === 16) || // Mastercard
    ((p2 === 34 || p2 === 37) && n === 15) || // Amex
    ((p4 === 6011 || p2 === 65 || (p4 >= 6440 && p4 <= 6499)) && n >= 16) || // Discover
    (p4 >= 3528 && p4 <= 3589 && n >= 16) || // JCB
    ((p2 === 36 || p2 === 38 || (p4 >= 3000 && p4 <= 3059)) && n === 14) || // Diners
    (p2 === 62 && n >= 16); // UnionPay
  return scheme && luhnOk(d);
}

/** Key id prefixes of AWS access keys (the pattern and its trigger), each "A" + 3 letters. */
const AWS_KEY_PREFIXES = ["AKIA", "ASIA", "ABIA", "ACCA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA", "APKA"];

/** The built-in patterns by config name (data_capture.redact.value_patterns). */
export const BUILTIN_PATTERNS: Record<string, () => ValuePattern> = {
  jwt: () => ({ name: "jwt", re: /\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*/g }),
  card_number: () => ({ name: "card_number", re: /(?<![\w.-])\d(?:[ -]?\d){12,18}(?![\w.-])/g, accept: cardCandidate }),
  aws_access_key: () => ({ name: "aws_access_key", re: new RegExp(`\\b(?:${AWS_KEY_PREFIXES.join("|")})[A-Z0-9]{16}\\b`, "g") }),
  url_credentials: () => ({ name: "url_credentials", re: /\b[a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^\s:@/?#"']*:([^\s@/?#"']+)@/g, group: 1 }),
  private_key: () => ({ name: "private_key", re: /-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)/g }),
};

// ------------------------------------------------------------------ hash key

/**
 * Reads the per-install HMAC key, creating it (32 random bytes, mode 0600, parent directory
 * 0700 when missing) on first use. Throws TracerError naming data_capture.redact.key_file.
 */
export function loadOrCreateKey(path: string): Buffer {
  const fail = (why: string): never => {
    throw new TracerError("CONFIG", `key "data_capture.redact.key_file": ${path}: ${why}`, { key: "data_capture.redact.key_file" });
  };
  const read = (): Buffer | undefined => {
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      return fail(`cannot read the hash key: ${(e as NodeJS.ErrnoException).code ?? e}`);
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) fail("not a regular file");
      if (st.mode & 0o077) fail(`the hash key must be readable by its owner only (mode ${(st.mode & 0o777).toString(8)}; chmod 600 it)`);
      const buf = Buffer.alloc(64);
      const n = readSync(fd, buf, 0, 64, 0);
      if (n < 16) fail(`the hash key is too short (${n} bytes, at least 16)`);
      return buf.subarray(0, n);
    } finally {
      closeSync(fd);
    }
  };
  const existing = read();
  if (existing) return existing;
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    const key = randomBytes(32);
    const fd = openSync(path, "wx", 0o600);
    try {
      writeSync(fd, key);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    return key;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return read() ?? fail("vanished while being created");
    if (e instanceof TracerError) throw e;
    return fail(`cannot create the hash key: ${(e as NodeJS.ErrnoException).code ?? e}`);
  }
}

// ------------------------------------------------------------------ the redactor

export interface RedactionCounters {
  RedactedSpans: number;
  RedactedHeaders: number;
  RedactedFields: number;
  RedactedPatterns: number;
}

/** Command lines by value; the last one is compared first (most often the very same string: no hashing). */
class CmdCache {
  readonly map = new Map<string, CmdEntry>();
  last: CmdEntry | undefined;
}

interface CmdEntry {
  in: string;
  out: string;
  names: string[];
  fields: number;
  patterns: number;
}

// What to do with an attribute, by key (classified once per distinct key).
const A_NONE = 0;
const A_SECRET_HEADER = 1; // whole value
const A_AUTH_HEADER = 2; // keep the scheme
const A_COOKIE = 3;
const A_SET_COOKIE = 4;
const A_URL_HEADER = 5; // Referer, Location: the query part, then patterns
const A_QUERY = 6;
const A_BODY = 7;
const A_CMDLINE = 8;
const A_PATH = 9; // patterns; the span name follows
const A_VALUE = 10; // patterns only

/** A key in Redactor.plan: `next` the keys seen after it, `alt` the other keys seen at its place. */
interface PlanNode {
  key: string;
  action: number;
  next: PlanNode | undefined;
  alt: PlanNode | undefined;
}
/** plan size before it is rebuilt (about 100 distinct attribute orders of 40 keys) */
const PLAN_NODES = 4096;
/** keys compared at one place before a lookup by name is cheaper */
const PLAN_ALTS = 8;

const REQ_H = "http.request.header.";
const RES_H = "http.response.header.";
/** Standard headers that carry no credential: no value patterns are run on them. */
const PLAIN_HEADERS = new Set([
  "host", "date", "user-agent", "accept", "accept-encoding", "accept-language", "accept-ranges", "connection", "keep-alive",
  "content-type", "content-length", "content-encoding", "transfer-encoding", "cache-control", "pragma", "expires",
  "age", "vary", "server", "etag", "if-none-match", "if-match", "if-modified-since", "last-modified", "via",
  "traceparent", "tracestate", "x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
  "x-forwarded-port", "x-real-ip", "upgrade", "te", "trailer", "allow", "access-control-allow-origin",
  "access-control-allow-methods", "access-control-allow-headers", "access-control-max-age", "origin",
  "strict-transport-security", "x-content-type-options", "x-frame-options", "content-language", "range", "content-range",
]);
const COOKIE_ATTRS = new Set(["path", "domain", "expires", "max-age", "samesite", "priority", "version", "comment"]);
const COOKIE_FLAGS = new Set(["secure", "httponly", "partitioned"]);

export class Redactor {
  readonly counters: RedactionCounters = { RedactedSpans: 0, RedactedHeaders: 0, RedactedFields: 0, RedactedPatterns: 0 };
  private readonly headers: NameMatcher;
  private readonly fields: NameMatcher;
  /** a field literal (any case, any separators): the text may hold a field name */
  private readonly fieldHint: RegExp;
  /** fieldHint, or "%" or "\\u" that could hide a name: whether a query or body needs a closer look */
  private readonly escapeHint: RegExp;
  /** command lines repeat per process: redacted once */
  private readonly cmdCache = new CmdCache();
  private readonly resCmdCache = new CmdCache();
  private readonly patterns: ValuePattern[];
  /**
   * one cheap test before any pattern runs: the union of what every pattern needs. Kept apart
   * from the field hint: case-sensitive literals (eyJ, ://, AKIA…) let the engine skip ahead,
   * which the case-insensitive field hint does not (one pass with both cost more than the two).
   */
  private readonly trigger: RegExp | undefined;
  /**
   * the action of each attribute key, by the order keys come in: spans from the same code path
   * have their attributes in the same order, so the next key is most often the one seen after
   * the previous key last time, and its action is found by comparing one interned string
   * instead of a lookup by name (see redact()). Bounded: rebuilt past PLAN_NODES nodes.
   */
  private plan: PlanNode = { key: "", action: A_NONE, next: undefined, alt: undefined };
  private planNodes = 0;
  /**
   * action by attribute key. A null-prototype object rather than a Map: keys are the same
   * interned strings span after span, and property lookup on them measured 4x faster.
   */
  private actions: Record<string, number> = Object.create(null);
  private actionCount = 0;
  private readonly key: Buffer | undefined;
  private readonly hashCache = new Map<string, string>();
  private readonly authCache = new Map<string, string>();
  private lastAuth = "";
  private lastAuthOut = "";
  /** names redacted in the span being processed */
  private readonly names: string[] = [];

  constructor(readonly settings: RedactConfig) {
    this.headers = new NameMatcher(settings.headers, (s) => s.toLowerCase());
    this.fields = new NameMatcher(settings.fields, normalizeField);
    this.fieldHint = this.fields.hint(settings.fields);
    this.escapeHint = this.fields.hint(settings.fields, ["%", "\\\\u"]);
    this.patterns = settings.value_patterns.map((n) => {
      const make = BUILTIN_PATTERNS[n];
      if (!make) throw new TracerError("CONFIG", `key "data_capture.redact.value_patterns": unknown pattern ${JSON.stringify(n)}`, { key: "data_capture.redact.value_patterns" });
      return make();
    });
    settings.custom_patterns.forEach((src, i) => {
      let re: RegExp;
      try {
        re = new RegExp(src, "g");
      } catch (e) {
        throw new TracerError("CONFIG", `key "data_capture.redact.custom_patterns[${i}]": not a valid regular expression: ${(e as Error).message}`, { key: `data_capture.redact.custom_patterns[${i}]` });
      }
      this.patterns.push({ name: `custom_patterns[${i}]`, re, group: /\(\?<secret>/.test(src) ? "secret" : undefined });
    });
    // One cheap test before any pattern runs: literal parts of the built-ins (a card number needs
    // 13 digits); a custom pattern is its own trigger.
    const triggers = this.patterns.map((p) => {
      switch (p.name) {
        case "jwt": return "eyJ";
        case "card_number": return "\\d{4}[ -]?\\d{4}[ -]?\\d{4}|\\d{4}[ -]?\\d{6}[ -]?\\d{4}";
        case "aws_access_key": return `A(?:${AWS_KEY_PREFIXES.map((p) => p.slice(1)).join("|")})`;
        case "url_credentials": return ":\\/\\/";
        case "private_key": return "-----BEGIN";
        default: return `(?:${p.re.source})`;
      }
    });
    // A custom pattern may use constructs that do not combine: then every text is tried.
    try {
      this.trigger = triggers.length ? new RegExp(triggers.join("|")) : undefined;
    } catch {
      this.trigger = /[\s\S]/;
    }
    const MIN_LENGTH: Record<string, number> = { jwt: 17, card_number: 13, aws_access_key: 20, url_credentials: 8, private_key: 30 };
    this.minPatternLength = settings.custom_patterns.length ? 1 : Math.min(Infinity, ...settings.value_patterns.map((n) => MIN_LENGTH[n] ?? 1));
    if (settings.mode === "hash") this.key = loadOrCreateKey(settings.key_file);
  }

  private readonly minPatternLength: number;

  /** Whether a value pattern may match in `s`. */
  private triggered(s: string): boolean {
    return this.trigger !== undefined && this.trigger.test(s);
  }

  /** Whether `s` may hold a field name worth a full scan. */
  private mayHoldField(s: string, escapes: string): boolean {
    return this.fieldHint.test(s) || s.includes(escapes);
  }

  /** The marker that replaces `secret`. */
  private replacement(secret: string): string {
    if (!this.key) return MASK;
    let h = this.hashCache.get(secret);
    if (h === undefined) {
      h = `${HASH_PREFIX}${createHmac("sha256", this.key).update(secret).digest("hex").slice(0, 16)}]`;
      if (this.hashCache.size >= 1024) this.hashCache.clear();
      this.hashCache.set(secret, h);
    }
    return h;
  }

  private note(name: string): void {
    if (!this.names.includes(name) && this.names.length < 64) this.names.push(name);
  }

  private classify(key: string): number {
    let a = this.actions[key];
    if (a !== undefined) return a;
    a = A_NONE;
    const hdr = key.startsWith(REQ_H) ? key.slice(REQ_H.length) : key.startsWith(RES_H) ? key.slice(RES_H.length) : undefined;
    if (hdr !== undefined) {
      if (this.headers.matches(hdr)) {
        a = hdr === "authorization" || hdr === "proxy-authorization" ? A_AUTH_HEADER : hdr === "cookie" ? A_COOKIE : hdr === "set-cookie" ? A_SET_COOKIE : A_SECRET_HEADER;
      } else if (hdr === "referer" || hdr === "location" || hdr === "content-location") {
        a = A_URL_HEADER;
      } else if (PLAIN_HEADERS.has(hdr) || hdr.startsWith("x-envoy-") || hdr.startsWith("x-b3-")) {
        a = A_NONE;
      } else {
        a = A_VALUE;
      }
    } else if (key === "url.query") a = A_QUERY;
    else if (key === "http.request.body" || key === "http.response.body") a = A_BODY;
    else if (key === "process.command_line") a = A_CMDLINE;
    else if (key === "url.path") a = A_PATH;
    else if (key === "user_agent.original") a = this.classify(REQ_H + "user-agent"); // a copy of that header
    if (++this.actionCount > 4096) {
      this.actions = Object.create(null);
      this.actionCount = 1;
    }
    this.actions[key] = a;
    return a;
  }

  /** Redacts `span` in place. Never throws on span content. */
  redact(span: Span): void {
    this.names.length = 0;
    const attrs = span.attributes;
    let pathChanged = false;
    let node = this.plan;
    for (const key in attrs) {
      // the action first, the value only when there is one: most attributes need none, and
      // reading every value cost more than the lookup
      let n = node.next;
      let alts = 0;
      while (n !== undefined && n.key !== key) {
        n = n.alt;
        alts++;
      }
      let a: number;
      if (n !== undefined) {
        a = n.action;
        node = n;
      } else {
        const known = this.actions[key];
        a = known === undefined ? this.classify(key) : known;
        if (alts < PLAN_ALTS) {
          if (++this.planNodes > PLAN_NODES) {
            this.plan = { key: "", action: A_NONE, next: undefined, alt: undefined };
            this.planNodes = 1;
            node = this.plan;
          }
          node = node.next = { key, action: a, next: undefined, alt: node.next };
        }
        // else: a key after many different ones (varied headers) is looked up, not added
      }
      if (a === A_NONE) continue;
      const v = attrs[key];
      if (typeof v !== "string" || v.length === 0) continue;
      const out = this.redactValue(a, key, v, attrs);
      if (out !== v) {
        attrs[key] = out;
        if (a === A_PATH) pathChanged = true;
      }
    }
    const sh = span.shared;
    if (sh !== undefined) {
      // The connection's attributes take the same actions as the span's own, value by value (so
      // counters and names are this span's); which of its keys have one is found once per object.
      // It is frozen and other spans hold it: changed values go to a copy, the same copy for every
      // span of it (a value's redaction depends only on the value and these rules).
      let acts = this.sharedActions.get(sh);
      if (acts === undefined) {
        acts = [];
        for (const key in sh) {
          const known = this.actions[key];
          const a = known === undefined ? this.classify(key) : known;
          if (a !== A_NONE) acts.push([key, a]);
        }
        this.sharedActions.set(sh, acts);
      }
      const made = this.sharedCopies.get(sh);
      let copy: Attributes | undefined;
      for (let i = 0; i < acts.length; i++) {
        const [key, a] = acts[i]!;
        const v = sh[key];
        if (typeof v !== "string" || v.length === 0) continue;
        const out = this.redactValue(a, key, v, attrs);
        if (out !== v && made === undefined) (copy ??= { ...sh })[key] = out;
      }
      if (copy !== undefined) {
        this.sharedCopies.set(sh, Object.freeze(copy));
        span.shared = copy;
      } else if (made !== undefined) span.shared = made;
    }
    const res = span.resource;
    const cl = res["process.command_line"];
    if (typeof cl === "string" && cl) res["process.command_line"] = this.cachedCommandLine(cl, this.resCmdCache, "resource.process.command_line");
    if (pathChanged) {
      // the name is "<METHOD or HTTP> <url.path>": keep its first word, take the redacted path
      const sp = span.name.indexOf(" ");
      span.name = `${sp < 0 ? span.name : span.name.slice(0, sp)} ${attrs["url.path"]}`;
    }
    if (this.names.length) {
      attrs[REDACTED_ATTR] = this.names.length === 1 ? this.names[0]! : this.names.join(",");
      this.counters.RedactedSpans++;
    }
  }

  /** Per shared attributes object: its keys that have a redaction action, and the action. */
  private readonly sharedActions = new WeakMap<Attributes, [string, number][]>();
  /** Per shared attributes object whose values redaction changes: its redacted frozen copy. */
  private readonly sharedCopies = new WeakMap<Attributes, Attributes>();

  private redactValue(a: number, key: string, v: string, attrs: Attributes): string {
    switch (a) {
      case A_SECRET_HEADER:
        this.counters.RedactedHeaders++;
        this.note(key);
        return this.replacement(v);
      case A_AUTH_HEADER: {
        this.counters.RedactedHeaders++;
        this.note(key);
        // clients send the same credential again and again: one parse per distinct value, and
        // the last one compared first (equal strings compare faster than one is hashed)
        if (v === this.lastAuth) return this.lastAuthOut;
        let out = this.authCache.get(v);
        if (out === undefined) {
          const m = /^\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)\s+(\S[\s\S]*)$/.exec(v);
          out = m ? `${m[1]} ${this.replacement(m[2]!)}` : this.replacement(v);
          if (this.authCache.size >= 1024) this.authCache.clear();
          this.authCache.set(v, out);
        }
        this.lastAuth = v;
        this.lastAuthOut = out;
        return out;
      }
      case A_COOKIE:
      case A_SET_COOKIE:
        this.counters.RedactedHeaders++;
        this.note(key);
        return this.cookies(v, a === A_SET_COOKIE);
      case A_URL_HEADER: {
        const q = v.indexOf("?");
        const out = q < 0 ? v : v.slice(0, q + 1) + this.pairs(v.slice(q + 1), key);
        return this.valuePatterns(out, key, false);
      }
      case A_QUERY: {
        // one pass for names, one for patterns; each most often finds nothing
        const out = this.escapeHint.test(v) && this.mayHoldField(v, "%") ? this.pairs(v, key) : v;
        return this.valuePatterns(out, key, false, out === v ? this.triggered(v) : undefined);
      }
      case A_BODY: {
        const hint = this.escapeHint.test(v);
        const triggered = this.triggered(v);
        if (!hint && !triggered) return v; // most bodies
        const json = this.looksJson(key, v, attrs);
        let out = v;
        if (!hint) {
          // patterns only
        } else if (json) {
          if (this.mayHoldField(v, "\\u")) out = this.json(v, key);
        } else if (this.formLike(key, v, attrs) && this.mayHoldField(v, "%")) {
          out = this.pairs(v, key);
        }
        return this.valuePatterns(out, key, json, out === v ? triggered : undefined);
      }
      case A_CMDLINE:
        return this.cachedCommandLine(v, key === "process.command_line" ? this.cmdCache : this.resCmdCache, key);
      default: // A_PATH, A_VALUE: shorter than the shortest possible match needs no look
        return v.length < this.minPatternLength ? v : this.valuePatterns(v, key, false);
    }
  }

  private contentType(key: string, attrs: Attributes): string {
    const ct = attrs[key === "http.request.body" ? "http.request.header.content-type" : "http.response.header.content-type"];
    return typeof ct === "string" ? ct : "";
  }

  private looksJson(key: string, v: string, attrs: Attributes): boolean {
    const ct = this.contentType(key, attrs);
    if (ct.includes("json")) return true;
    if (ct.includes("x-www-form-urlencoded")) return false;
    for (let i = 0; i < v.length; i++) {
      const c = v.charCodeAt(i);
      if (c === 32 || c === 9 || c === 10 || c === 13) continue;
      return c === 123 || c === 91; // { [
    }
    return false;
  }

  private formLike(key: string, v: string, attrs: Attributes): boolean {
    const ct = this.contentType(key, attrs);
    return ct.includes("x-www-form-urlencoded") || (ct === "" || ct.startsWith("text/plain")) && /^[^\s=&]+=[^\s]*$/.test(v);
  }

  /** name=value pairs separated by "&" (query strings, form bodies). */
  private pairs(s: string, key: string): string {
    let out = "";
    let last = 0;
    let i = 0;
    const n = s.length;
    while (i <= n) {
      let j = s.indexOf("&", i);
      if (j < 0) j = n;
      const eq = s.indexOf("=", i);
      if (eq >= 0 && eq < j && eq > i) {
        let name = s.slice(i, eq);
        if (name.includes("%") || name.includes("+")) {
          try {
            name = decodeURIComponent(name.replace(/\+/g, " "));
          } catch {
            /* keep it encoded */
          }
        }
        if (eq + 1 < j && this.fields.matches(name)) {
          out += s.slice(last, eq + 1) + this.replacement(s.slice(eq + 1, j));
          last = j;
          this.counters.RedactedFields++;
          this.note(`${key}:${name}`);
        }
      }
      i = j + 1;
    }
    return last === 0 ? s : out + s.slice(last);
  }

  /** Cookie: every value; Set-Cookie: cookie values, keeping attributes (Path, Expires, flags). */
  private cookies(v: string, setCookie: boolean): string {
    let out = "";
    let afterExpires = false;
    for (const seg of v.split(/([;,])/)) {
      if (seg === ";" || seg === ",") {
        out += seg;
        continue;
      }
      const lead = seg.length - seg.trimStart().length;
      const t = seg.trim();
      const eq = t.indexOf("=");
      const name = (eq < 0 ? t : t.slice(0, eq)).trim().toLowerCase();
      if (t === "") out += seg;
      else if (setCookie && afterExpires && eq < 0) out += seg; // "21 Oct 2015 07:28:00 GMT" after "Expires=Wed,"
      else if (setCookie && (COOKIE_FLAGS.has(name) || (eq >= 0 && COOKIE_ATTRS.has(name)))) out += seg;
      else if (eq < 0) out += seg.slice(0, lead) + this.replacement(t);
      else out += seg.slice(0, lead) + t.slice(0, eq + 1) + this.replacement(t.slice(eq + 1));
      afterExpires = setCookie && name === "expires";
    }
    return out;
  }

  /**
   * JSON at any depth, tolerating truncation: each string followed by ":" is a key; a matching
   * key's value (string contents; number, object or array as a whole, as a JSON string) is
   * replaced. null/true/false are kept: they carry no secret.
   */
  private json(s: string, key: string): string {
    const n = s.length;
    let out = "";
    let last = 0;
    let i = 0;
    while (i < n) {
      if (s.charCodeAt(i) !== 34) {
        i++;
        continue;
      }
      const ks = i + 1;
      const ke = stringEnd(s, ks);
      if (ke >= n) break; // a key or value cut by the capture cap: nothing after it
      let k = ke + 1;
      while (k < n && isWs(s.charCodeAt(k))) k++;
      if (k >= n || s.charCodeAt(k) !== 58) {
        i = ke + 1;
        continue;
      }
      k++;
      let name = s.slice(ks, ke);
      if (name.includes("\\")) {
        try {
          name = JSON.parse(`"${name}"`) as string;
        } catch {
          /* keep it escaped */
        }
      }
      if (!this.fields.matches(name)) {
        i = k;
        continue;
      }
      while (k < n && isWs(s.charCodeAt(k))) k++;
      if (k >= n) break;
      const c = s.charCodeAt(k);
      let end: number;
      let rep: string;
      if (c === 34) {
        end = Math.min(stringEnd(s, k + 1), n);
        rep = s.slice(last, k + 1) + this.replacement(s.slice(k + 1, end));
        i = end + 1; // past the closing quote
      } else {
        end = c === 123 || c === 91 ? compositeEnd(s, k) : literalEnd(s, k);
        const lit = s.slice(k, end);
        if (lit === "null" || lit === "true" || lit === "false") {
          i = end;
          continue;
        }
        rep = s.slice(last, k) + `"${this.replacement(lit)}"`;
        i = end;
      }
      out += rep;
      last = end;
      this.counters.RedactedFields++;
      this.note(`${key}:${name}`);
    }
    return last === 0 ? s : out + s.slice(last);
  }

  private cachedCommandLine(v: string, cache: CmdCache, key: string): string {
    let c = cache.last;
    if (c === undefined || c.in !== v) c = cache.map.get(v);
    if (c === undefined) {
      const before = this.names.length;
      const f0 = this.counters.RedactedFields;
      const p0 = this.counters.RedactedPatterns;
      const out = this.valuePatterns(this.mayHoldField(v, "\u0000") ? this.commandLine(v, key) : v, key, false);
      c = { in: v, out, names: this.names.slice(before), fields: this.counters.RedactedFields - f0, patterns: this.counters.RedactedPatterns - p0 };
      if (cache.map.size >= 256) cache.map.clear();
      cache.map.set(v, c);
      cache.last = c;
      return out;
    }
    cache.last = c;
    for (const n of c.names) this.note(n);
    this.counters.RedactedFields += c.fields;
    this.counters.RedactedPatterns += c.patterns;
    return c.out;
  }

  /** argv joined with spaces: --name=v, --name v, -name=v, NAME=v. */
  private commandLine(s: string, key: string): string {
    if (!s.includes("=") && !s.includes("-")) return s;
    const toks = s.split(" ");
    let changed = false;
    for (let i = 0; i < toks.length; i++) {
      const t = toks[i]!;
      if (t.length < 2) continue;
      const eq = t.indexOf("=");
      const dashed = t.charCodeAt(0) === 45;
      const name = (eq < 0 ? t : t.slice(0, eq)).replace(/^-+/, "");
      if (name === "" || (!dashed && (eq < 0 || !/^[A-Za-z_][A-Za-z0-9_.-]*$/.test(name)))) continue;
      if (!this.fields.matches(name)) continue;
      if (eq >= 0) {
        if (eq + 1 >= t.length) continue;
        toks[i] = t.slice(0, eq + 1) + this.replacement(t.slice(eq + 1));
      } else {
        const next = toks[i + 1];
        if (next === undefined || next === "" || next.charCodeAt(0) === 45) continue;
        toks[i + 1] = this.replacement(next);
        i++;
      }
      changed = true;
      this.counters.RedactedFields++;
      this.note(`${key}:${name}`);
    }
    return changed ? toks.join(" ") : s;
  }

  /**
   * Built-in and custom patterns. Markers already written are skipped; in JSON a card number
   * outside a string becomes a JSON string so the document stays valid. `triggered`: what
   * triggered(s) gave, when the caller has asked already.
   */
  private valuePatterns(s: string, key: string, json: boolean, triggered = this.triggered(s)): string {
    if (!triggered) return s;
    let out = s;
    for (const p of this.patterns) {
      p.re.lastIndex = 0;
      if (!p.re.test(out)) continue;
      p.re.lastIndex = 0;
      out = out.replace(p.re, (...args: unknown[]) => {
        const m = args[0] as string;
        const hasGroups = typeof args[args.length - 1] === "object";
        const offset = args[args.length - (hasGroups ? 3 : 2)] as number;
        const whole = args[args.length - (hasGroups ? 2 : 1)] as string;
        if (insideMarker(whole, offset, m.length)) return m;
        if (p.accept && !p.accept(m)) return m;
        let secret = m;
        let pre = "";
        let post = "";
        if (p.group !== undefined) {
          const g = typeof p.group === "number" ? (args[p.group] as string | undefined) : (args[args.length - 1] as Record<string, string | undefined>)[p.group];
          if (g === undefined || g === "") return m;
          const at = m.lastIndexOf(g);
          pre = m.slice(0, at);
          post = m.slice(at + g.length);
          secret = g;
        }
        this.counters.RedactedPatterns++;
        this.note(`${key}:<${p.name}>`);
        let rep = this.replacement(secret);
        if (json && p.name === "card_number" && !inJsonString(whole, offset)) rep = `"${rep}"`;
        return pre + rep + post;
      });
    }
    return out;
  }
}

function isWs(c: number): boolean {
  return c === 32 || c === 9 || c === 10 || c === 13;
}

/** Index of the closing quote of the JSON string whose contents start at `i` (or s.length). */
function stringEnd(s: string, i: number): number {
  const n = s.length;
  while (i < n) {
    const c = s.charCodeAt(i);
    if (c === 92) i += 2;
    else if (c === 34) return i;
    else i++;
  }
  return n;
}

/** End (exclusive) of the object or array starting at `i`, or s.length when cut. */
function compositeEnd(s: string, i: number): number {
  let depth = 0;
  const n = s.length;
  while (i < n) {
    const c = s.charCodeAt(i);
    if (c === 34) i = stringEnd(s, i + 1);
    else if (c === 123 || c === 91) depth++;
    else if (c === 125 || c === 93) {
      if (--depth === 0) return i + 1;
    }
    i++;
  }
  return n;
}

/** End of a number/literal (or garbage) at `i`. */
function literalEnd(s: string, i: number): number {
  const n = s.length;
  while (i < n) {
    const c = s.charCodeAt(i);
    if (c === 44 || c === 125 || c === 93 || isWs(c)) return i;
    i++;
  }
  return n;
}

/** True when [offset, offset+len) lies inside a `[hmac:…]` marker already written. */
function insideMarker(s: string, offset: number, len: number): boolean {
  const start = s.lastIndexOf(HASH_PREFIX, offset);
  if (start < 0 || offset - start > HASH_PREFIX.length + 16) return false;
  const end = s.indexOf("]", start);
  return end >= offset + len - 1;
}

/** Whether position `offset` of JSON text `s` is inside a string (counted from the start). */
function inJsonString(s: string, offset: number): boolean {
  let inStr = false;
  for (let i = 0; i < offset; i++) {
    const c = s.charCodeAt(i);
    if (inStr && c === 92) i++;
    else if (c === 34) inStr = !inStr;
  }
  return inStr;
}

// ------------------------------------------------------------------ the sink

/**
 * Redacts every span before handing it to `inner`. Built where sinks are created
 * (export/factory.ts createSink, cli/main.ts capture), so no span reaches any exporter unredacted.
 */
export class RedactingSink implements SpanSink {
  private redactor: Redactor;
  private errors = 0;
  constructor(readonly inner: SpanSink, redactor: Redactor) {
    this.redactor = redactor;
  }
  static fromConfig(inner: SpanSink, cfg: Config): RedactingSink {
    return new RedactingSink(inner, new Redactor(cfg.data_capture.redact));
  }
  export(span: Span): void {
    try {
      this.redactor.redact(span);
    } catch {
      // Never let an unredacted span out: drop it and count.
      this.errors++;
      return;
    }
    this.inner.export(span);
  }
  shutdown(timeoutMs: number): Promise<void> {
    return this.inner.shutdown(timeoutMs);
  }
  stats(): Record<string, number> {
    const c = this.redactor.counters;
    return { ...this.inner.stats(), ...c, ...(this.errors ? { RedactionErrors: this.errors } : {}) };
  }
  /** SIGHUP: new redaction rules (throws on a bad key file, keeping the old ones) and exporter settings. */
  update(cfg: Config): void {
    const next = new Redactor(cfg.data_capture.redact);
    Object.assign(next.counters, this.redactor.counters);
    this.redactor = next;
    const u = (this.inner as { update?: (c: Config) => void }).update;
    if (typeof u === "function") u.call(this.inner, cfg);
  }
}
