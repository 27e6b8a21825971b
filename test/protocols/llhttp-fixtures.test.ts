/**
 * Runs llhttp's own request/response test cases (test/fixtures/llhttp/cases.jsonl, derived from
 * llhttp 9.4.2's markdown tests) against Http1Parser. Strict llhttp behaviour is the reference:
 * for every runnable case the parser must produce the same complete messages (method, URL,
 * status, reason, version, headers, body) and report an error exactly when llhttp does, whether the
 * input is fed whole, split in two at every byte position, or one byte at a time.
 *
 * How llhttp's outcomes map onto this parser:
 * - Only messages llhttp completed are compared; messages it left incomplete are never emitted by
 *   this parser while the connection stays open either.
 * - llhttp stops at its first error; this parser resynchronises and may emit later messages, so
 *   only messages emitted before the first onError call are compared.
 * - PAUSED_UPGRADE (code 22) is not an error here: the last message has upgrade=true instead.
 * - `*-finish` cases call end(): llhttp's finish=2 ("unsafe") must give an error, finish=1 completes
 *   the close-delimited message.
 * - llhttp keeps trailing whitespace of header values and reports trailers among the headers; the
 *   parser trims OWS and keeps trailers apart, so expected values are trimmed and
 *   headers+trailers is compared.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Http1Parser, type HttpMessage } from "../../src/protocols/http1/parser.ts";

interface ExpectedMessage {
  method?: string;
  url?: string;
  protocol?: string;
  version?: string;
  status?: number;
  status_text?: string;
  headers: [string, string | null][];
  body_b64: string;
  complete: boolean;
}
interface Case {
  id: string;
  section: string;
  type: string;
  meta: Record<string, unknown>;
  raw_b64: string;
  expected: { messages: ExpectedMessage[]; error: { code: number; name: string; reason: string } | null };
  log: string[];
}

const CASES: Case[] = readFileSync(join(import.meta.dir, "../fixtures/llhttp/cases.jsonl"), "utf8")
  .split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as Case);

const CODE_PAUSED_UPGRADE = 22;

/** Why a case cannot be run against a strict HTTP-only parser, or null when it runs. */
function skipReason(c: Case): string | null {
  if (c.type.includes("lenient")) return `needs llhttp lenient mode (${c.type})`;
  if (c.meta.skipBody === true && c.type === "request") {
    return "on_headers_complete skip-body return value has no request-side equivalent";
  }
  const foreign = c.expected.messages.some((m) => m.protocol === "RTSP" || m.protocol === "ICE");
  if (foreign && c.expected.error === null) return "RTSP/ICE protocols are out of scope (HTTP-only parser)";
  const e = c.expected.error;
  if (e && (e.name === "INVALID_METHOD" || /^Invalid method for HTTP/.test(e.reason))) {
    return "any RFC 9110 token is a method here (llhttp accepts only its list): odd methods must become spans";
  }
  return null;
}

function finishValue(c: Case): number | null {
  const last = c.log[c.log.length - 1] ?? "";
  const m = /^off=NULL finish=(\d)$/.exec(last);
  return m ? Number(m[1]) : null;
}

interface Outcome { events: ({ msg: HttpMessage } | { err: string })[] }

/** Feeds `parts` through one reused scratch buffer, clobbered after each push (tests copying). */
function runParser(c: Case, parts: Uint8Array[]): Outcome {
  const kind = c.type.startsWith("request") ? "request" : "response";
  const out: Outcome = { events: [] };
  const p = new Http1Parser(kind, {
    bodyMaxSize: 1 << 20,
    keepBody: () => true,
    onMessage: (m) => out.events.push({ msg: m }),
    onError: (e) => out.events.push({ err: e }),
    requestMethod: c.meta.skipBody === true ? () => "HEAD" : undefined,
  });
  let ts = 1n;
  for (const part of parts) {
    const scratch = new Uint8Array(part.length);
    scratch.set(part);
    p.push(scratch, ts++);
    scratch.fill(0x5a);
  }
  if (c.type.endsWith("-finish")) p.end(ts);
  return out;
}

const trimOws = (s: string): string => s.replace(/^[ \t]+|[ \t]+$/g, "");

function describeMessage(m: HttpMessage): unknown {
  return {
    method: m.method, target: m.target, status: m.status, reason: m.reason, version: m.version,
    headers: [...m.headers, ...m.trailers], body: Buffer.from(m.body).toString("latin1"),
  };
}

function describeExpected(c: Case, e: ExpectedMessage): unknown {
  const request = c.type.startsWith("request");
  return {
    method: request ? e.method : "", target: request ? e.url : "",
    status: request ? 0 : e.status, reason: request ? "" : e.status_text ?? "",
    version: e.version ?? "0.9",
    headers: e.headers.map(([k, v]) => [k, trimOws(v ?? "")]),
    body: Buffer.from(e.body_b64, "base64").toString("latin1"),
  };
}

/** Returns a description of the first mismatch, or null. */
function check(c: Case, out: Outcome): string | null {
  const code = c.expected.error?.code ?? null;
  const finish = finishValue(c);
  const errorExpected = (code !== null && code !== CODE_PAUSED_UPGRADE) || finish === 2;
  const upgradeExpected = code === CODE_PAUSED_UPGRADE;
  let expected = c.expected.messages.filter((m) => m.complete);
  if (finish === 1) expected = c.expected.messages; // the close-delimited message completes at end()

  const firstErr = out.events.findIndex((e) => "err" in e);
  const errors = out.events.filter((e) => "err" in e).length;
  if (errorExpected && errors === 0) return `expected an error (${c.expected.error?.reason ?? "unsafe finish"}), got none`;
  if (!errorExpected && errors > 0) return `unexpected error(s): ${JSON.stringify(out.events.filter((e) => "err" in e))}`;
  const before = (firstErr < 0 ? out.events : out.events.slice(0, firstErr))
    .flatMap((e) => ("msg" in e ? [e.msg] : []));
  const got = before.map(describeMessage);
  const want = expected.map((e) => describeExpected(c, e));
  if (JSON.stringify(got) !== JSON.stringify(want)) {
    return `messages differ\n got: ${JSON.stringify(got)}\nwant: ${JSON.stringify(want)}`;
  }
  for (const m of before) {
    if (m.partial || m.bodyTruncated || m.bodySize !== m.body.length) return `message flagged partial/truncated`;
  }
  const upgraded = before.some((m) => m.upgrade);
  if (upgraded !== upgradeExpected) return `upgrade=${upgraded}, expected ${upgradeExpected}`;
  if (upgradeExpected && !before[before.length - 1]?.upgrade) return "upgrade not on the last message";
  return null;
}

function splits(raw: Uint8Array): [string, Uint8Array[]][] {
  const out: [string, Uint8Array[]][] = [["whole", [raw]]];
  for (let k = 1; k < raw.length; k++) out.push([`split@${k}`, [raw.subarray(0, k), raw.subarray(k)]]);
  if (raw.length > 1) out.push(["byte-by-byte", Array.from(raw, (_, k) => raw.subarray(k, k + 1))]);
  return out;
}

const skipped = CASES.map((c) => [c, skipReason(c)] as const).filter(([, r]) => r !== null);
const runnable = CASES.filter((c) => skipReason(c) === null);

console.log(`llhttp fixtures: ${CASES.length} cases, ${runnable.length} run, ${skipped.length} skipped`);
const byReason = new Map<string, string[]>();
for (const [c, r] of skipped) byReason.set(r as string, [...(byReason.get(r as string) ?? []), c.id]);
for (const [r, ids] of byReason) console.log(`  skipped ${ids.length}: ${r}\n    ${ids.join(", ")}`);

describe("llhttp fixtures", () => {
  for (const c of CASES) {
    const reason = skipReason(c);
    const name = `${c.id} ${c.section}`;
    if (reason !== null) {
      test.skip(`${name} [${reason}]`, () => {});
      continue;
    }
    test(name, () => {
      const raw = new Uint8Array(Buffer.from(c.raw_b64, "base64"));
      let firstProblem: string | null = null;
      for (const [how, parts] of splits(raw)) {
        const problem = check(c, runParser(c, parts));
        if (problem !== null) { firstProblem = `${how}: ${problem}`; break; }
      }
      expect(firstProblem).toBeNull();
    });
  }

  test("most cases run", () => {
    expect(runnable.length).toBeGreaterThanOrEqual(200);
  });
});
