/** createSink and the stdout/file span sinks. */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { validateConfig } from "../../src/config/config.ts";
import { createSink, isReloadable } from "../../src/export/factory.ts";
import { RedactingSink } from "../../src/spans/redact.ts";
import { OtlpExporter } from "../../src/export/otlp/exporter.ts";
import { jsonLine, StdoutExporter } from "../../src/export/stdout.ts";
import { spanToJson, type Span } from "../../src/spans/span.ts";
import { Logger } from "../../src/log/log.ts";

const dir = mkdtempSync(join(tmpdir(), "otlp-sinks-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function span(i: number): Span {
  return {
    traceId: "0af7651916cd43dd8448eb211c80319c", spanId: i.toString(16).padStart(16, "0"), name: `GET /a/${i}`, kind: "client",
    startTimeUnixNano: 1_700_000_000_000_000_001n, endTimeUnixNano: 1_700_000_000_250_000_001n, error: false,
    attributes: { "http.status_code": 200, "http.method": "GET", ok: true }, resource: { "service.name": "s" },
  };
}

const quiet = new Logger("error", { write() {} });

describe("createSink", () => {
  test("otlp → OtlpExporter; stdout and file: → StdoutExporter; each behind a RedactingSink (reloadable)", async () => {
    const otlp = createSink(validateConfig({ agent_config: { reporting: { endpoint: "localhost:4318" } }, spool: { path: join(dir, "spool") } }, "", ""), { logger: quiet });
    expect(otlp).toBeInstanceOf(RedactingSink);
    expect((otlp as RedactingSink).inner).toBeInstanceOf(OtlpExporter);
    expect(isReloadable(otlp)).toBe(true);
    await otlp.shutdown(0);
    const out = createSink(validateConfig({ exporter: "stdout" }, "", ""));
    expect((out as RedactingSink).inner).toBeInstanceOf(StdoutExporter);
    expect(isReloadable(out)).toBe(true); // the redaction rules reload
    const file = createSink(validateConfig({ exporter: `file:${join(dir, "x.jsonl")}` }, "", ""));
    expect(((file as RedactingSink).inner as StdoutExporter).target).toEqual({ kind: "file", path: join(dir, "x.jsonl") });
    await file.shutdown(0);
  });

  test("otlp without an endpoint, or a bad one, fails setup", () => {
    expect(() => createSink(validateConfig({}, "", ""))).toThrow(/endpoint.*is empty/);
    expect(() => createSink(validateConfig({ agent_config: { reporting: { endpoint: "ftp://x:1" } } }, "", ""))).toThrow(/not supported/);
  });
});

describe("jsonLine", () => {
  test("is JSON.stringify(spanToJson(span)) byte for byte: parent or not, escapes, durations, a frozen resource reused", () => {
    const resource = Object.freeze({ "service.name": "svc \"q\"", "process.pid": 7, "host.name": "h\u2028" });
    const spans: Span[] = [
      span(1),
      { ...span(2), parentSpanId: "00f067aa0ba902b7", name: "GET /a\"b\\c\n\u0001é😀", error: true, resource },
      { ...span(3), endTimeUnixNano: span(3).startTimeUnixNano + 1n, attributes: { "a": 1.5, "b": false, "c": "x\ty", "d": -0 }, resource },
      { ...span(4), startTimeUnixNano: 5n, endTimeUnixNano: 5n, resource: { "service.name": "unfrozen" } },
    ];
    for (const s of [...spans, ...spans]) expect(jsonLine(s)).toBe(JSON.stringify(spanToJson(s)));
  });

  test("with shared attributes (Span.shared): own then shared, as spanToJson lists them; none of its own, an empty or unfrozen shared object", () => {
    const shared = Object.freeze({ "url.scheme": "https", "client.port": 40000, "process.command_line": "app \"--x\" é\n" });
    const spans: Span[] = [
      { ...span(1), shared },
      { ...span(2), shared },
      { ...span(3), attributes: {}, shared },
      { ...span(4), shared: Object.freeze({}) },
      { ...span(5), attributes: {}, shared: Object.freeze({}) },
      { ...span(6), shared: { "x": "unfrozen", "y": 2 } },
    ];
    for (const s of [...spans, ...spans]) {
      expect(jsonLine(s)).toBe(JSON.stringify(spanToJson(s)));
      const parsed = JSON.parse(jsonLine(s));
      expect(parsed.attributes).toEqual({ ...s.attributes, ...s.shared });
    }
  });

  test("random attribute maps (every character class, odd numbers, integer-like and quoted keys) match JSON.stringify", () => {
    let seed = 12345;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2147483648) % n);
    const chars = ["a", "Z", "0", " ", '"', "\\", "/", "\n", "\u0000", "\u001f", "\u007f", "é", "€", "\u2028", "\ud83d\ude00", "\ud800", "\udfff", "<", "&"];
    const str = () => Array.from({ length: rnd(12) }, () => chars[rnd(chars.length)]).join("");
    const values: (() => unknown)[] = [str, () => rnd(1000), () => -rnd(1000) / 7, () => NaN, () => Infinity, () => -0, () => 2 ** 60, () => rnd(2) === 0, () => null, () => undefined];
    for (let n = 0; n < 500; n++) {
      const attributes: Record<string, unknown> = {};
      for (let i = rnd(15); i > 0; i--) {
        const key = rnd(4) === 0 ? String(rnd(20)) : rnd(5) === 0 ? str() : `http.request.header.h${rnd(30)}`;
        attributes[key] = values[rnd(values.length)]!();
      }
      const sp = { ...span(n), name: str(), attributes: attributes as Span["attributes"] };
      expect(jsonLine(sp)).toBe(JSON.stringify(spanToJson(sp)));
    }
  });
});

describe("StdoutExporter", () => {
  test("file:PATH appends one spanToJson line per span, flushed on shutdown", async () => {
    const path = join(dir, "spans.jsonl");
    writeFileSync(path, "existing line\n");
    const sink = new StdoutExporter({ kind: "file", path }, quiet);
    for (let i = 0; i < 3; i++) sink.export(span(i));
    await sink.shutdown(1000);
    const lines = readFileSync(path, "utf8").trim().split("\n");
    expect(lines[0]).toBe("existing line");
    expect(lines.slice(1).map((l) => JSON.parse(l))).toEqual([0, 1, 2].map((i) => spanToJson(span(i))));
    expect(sink.stats()).toEqual({ SpansWritten: 3, SpansDropped: 0, WriteErrors: 0 });
    sink.export(span(9));
    expect(sink.stats().SpansDropped).toBe(1);
  });

  test("lines larger than the buffer, multi-byte text and many small lines are written whole and in order", async () => {
    const path = join(dir, "big.jsonl");
    const sink = new StdoutExporter({ kind: "file", path }, quiet);
    const resource = Object.freeze({ "service.name": "svc \"é\"", "host.name": "h\u2028😀" });
    const odd: Span = { ...span(4), parentSpanId: "00f067aa0ba902b7", name: "GET /a\"b\\c\n\u0001é😀", error: true, kind: "client", resource };
    const shared = Object.freeze({ "url.scheme": "https", "process.command_line": "app é😀 \"q\"", "client.port": 40000 });
    const spans = [span(1), { ...span(2), attributes: { big: "é€😀x".repeat(60_000) } }, ...Array.from({ length: 3000 }, (_, i) => (i % 7 ? (i % 3 ? span(10 + i) : { ...span(10 + i), shared }) : { ...odd, spanId: span(10 + i).spanId })), { ...span(3), attributes: { big: "y".repeat(500_000) }, shared }, { ...span(7), attributes: {}, shared }];
    // a span JSON cannot encode (a BigInt attribute) is dropped whole, between two that are not
    const bad = { ...span(5), attributes: { n: 1n } as unknown as Span["attributes"] };
    sink.export(span(6));
    sink.export(bad);
    for (const s of spans) sink.export(s);
    await sink.shutdown(1000);
    const lines = readFileSync(path, "utf8").split("\n");
    expect(lines.pop()).toBe("");
    expect(lines).toEqual([span(6), ...spans].map((s) => jsonLine(s)));
    expect(lines.slice(0, 20).map((l) => JSON.parse(l))).toEqual([span(6), ...spans].slice(0, 20).map((s) => spanToJson(s)));
    expect(sink.stats()).toEqual({ SpansWritten: spans.length + 1, SpansDropped: 1, WriteErrors: 0 });
  });

  test("flushes by time without shutdown", async () => {
    const path = join(dir, "timed.jsonl");
    const sink = new StdoutExporter({ kind: "file", path }, quiet);
    sink.export(span(1));
    await Bun.sleep(400);
    expect(readFileSync(path, "utf8").split("\n").length).toBe(2);
    await sink.shutdown(0);
  });

  test("an unopenable file fails setup", () => {
    expect(() => new StdoutExporter({ kind: "file", path: join(dir, "no", "such", "dir", "f") })).toThrow(/cannot open/);
  });

  test("stdout: lines go to the process's standard output", async () => {
    const script = join(dir, "print.ts");
    const src = join(import.meta.dir, "..", "..", "src");
    writeFileSync(script, `
      import { StdoutExporter } from ${JSON.stringify(join(src, "export", "stdout.ts"))};
      const s = new StdoutExporter();
      s.export({ traceId: "ab".repeat(16), spanId: "cd".repeat(8), name: "GET /", kind: "server",
        startTimeUnixNano: 1000000000n, endTimeUnixNano: 3000000000n, error: true, attributes: { "http.status_code": 500 }, resource: {} });
      await s.shutdown(100);
    `);
    const p = Bun.spawnSync([process.execPath, script], { stdout: "pipe", stderr: "pipe" });
    expect(p.exitCode).toBe(0);
    const line = JSON.parse(p.stdout.toString().trim());
    expect(line).toMatchObject({ name: "GET /", kind: "server", durationMs: 2000, error: true, attributes: { "http.status_code": 500 } });
  });
});
