/**
 * Fuzzing the config loader (YAML and TOML): mutated valid configs, random documents and
 * hand-picked hostile inputs. Every input must load or fail with a TracerError "CONFIG" whose
 * message starts with the file name, quickly; nothing else may escape. Time-bounded; the seed is
 * printed on failure so a case can be replayed (FUZZ_SEED=…).
 */
import { describe, expect, test } from "bun:test";
import { parseConfigText } from "../../src/config/config.ts";
import { isTracerError } from "../../src/errors.ts";

const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);
const BUDGET_MS = Number(process.env.FUZZ_MS ?? 2500);

/** mulberry32: small, seeded, good enough to pick mutations */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const YAML_SEED = `mode: ingress_and_egress
service_name: shop
exporter: otlp
capture:
  exe: [nginx, node]
  ports: [80, 443]
targets:
  - exe: python3
    mode: egress
  - cmdline: "gunicorn .*"
    port: 8000
data_capture:
  body_max_size_bytes: 4096
  redact:
    mode: hash
    headers: [authorization, x-*-token]
    custom_patterns: ['emp=(?<secret>E\\d+)']
agent_config:
  reporting:
    endpoint: https://collector:4318
    agent_token: abc
    headers: { x-a: b }
    max_batch_delay: 250ms
admin:
  address: 127.0.0.1:9464
logging:
  level: debug
  log_rotation: { enabled: false, max_size: 10 }
`;

const TOML_SEED = `mode = "egress"
exporter = "stdout"
[capture]
exe = ["nginx"]
ports = [8080]
[[targets]]
exe = "python3"
port = 9000
[data_capture]
body_max_size_bytes = 100
[data_capture.redact]
mode = "mask"
fields = ["password", "*token"]
[agent_config.reporting]
endpoint = "collector:4318"
max_batch_delay = "1s"
[admin]
address = "[::1]:9464"
`;

const TOKENS = [":", "-", " ", "\n", "  ", "[", "]", "{", "}", ",", '"', "'", "#", "&a", "*a", "!!str", "!!binary", "|", ">", "=", "[[", "]]", "\t", "\0", "\u00e9", "\ud800", "0x1F", "1e999", "-1", "99999999999999999999", "true", "null", "~", ".inf", "__proto__", "constructor", "mode", "targets", "redact", "custom_patterns", "(", "(?<", "\\", "${x}", "%YAML 1.2\n", "---\n", "...\n", "<<: *a\n"];

function mutate(text: string, r: () => number): string {
  let s = text;
  const n = 1 + Math.floor(r() * 6);
  for (let i = 0; i < n; i++) {
    const at = Math.floor(r() * (s.length + 1));
    switch (Math.floor(r() * 6)) {
      case 0: s = s.slice(0, at) + s.slice(at + 1 + Math.floor(r() * 8)); break; // delete
      case 1: s = s.slice(0, at) + TOKENS[Math.floor(r() * TOKENS.length)] + s.slice(at); break; // insert token
      case 2: s = s.slice(0, at) + String.fromCharCode(Math.floor(r() * 0x250)) + s.slice(at + 1); break; // replace char
      case 3: s = s.slice(0, at); break; // truncate
      case 4: { // duplicate a line
        const lines = s.split("\n");
        const k = Math.floor(r() * lines.length);
        lines.splice(k, 0, lines[k] ?? "");
        s = lines.join("\n");
        break;
      }
      default: s = s.slice(0, at) + s.slice(at).replace(/\d+/, String(Math.floor(r() * 2 ** 40) - 2 ** 39)); // numbers
    }
  }
  return s;
}

/** A random nested document in YAML flow syntax (also mostly valid TOML values). */
function randomDoc(r: () => number, depth = 0): string {
  const pick = r();
  if (depth > 4 || pick < 0.3) return [JSON.stringify("x".repeat(Math.floor(r() * 5))), String(Math.floor(r() * 1e6)), "true", "null", "1.5", "5s"][Math.floor(r() * 6)]!;
  if (pick < 0.6) return `[${Array.from({ length: Math.floor(r() * 4) }, () => randomDoc(r, depth + 1)).join(", ")}]`;
  const keys = ["mode", "capture", "exe", "ports", "targets", "data_capture", "redact", "headers", "admin", "address", "x"];
  return `{${Array.from({ length: Math.floor(r() * 4) }, () => `${keys[Math.floor(r() * keys.length)]}: ${randomDoc(r, depth + 1)}`).join(", ")}}`;
}

function check(text: string, path: string): "ok" | "error" {
  const t0 = performance.now();
  try {
    parseConfigText(text, path);
    return "ok";
  } catch (e) {
    if (!isTracerError(e) || e.code !== "CONFIG" || !e.message.startsWith(path)) {
      throw new Error(`seed ${SEED}: ${path} input ${JSON.stringify(text.slice(0, 300))} threw ${String((e as Error)?.stack ?? e)}`);
    }
    return "error";
  } finally {
    const ms = performance.now() - t0;
    if (ms > 1000) throw new Error(`seed ${SEED}: ${path} took ${ms.toFixed(0)} ms on ${JSON.stringify(text.slice(0, 200))}`);
  }
}

describe(`config loader fuzz (seed ${SEED})`, () => {
  test("the seeds load", () => {
    expect(check(YAML_SEED, "/f.yaml")).toBe("ok");
    expect(check(TOML_SEED, "/f.toml")).toBe("ok");
  });

  test("mutated YAML and TOML: a config or a CONFIG error naming the file, never a crash", () => {
    const r = rng(SEED);
    const counts = { ok: 0, error: 0 };
    const end = Date.now() + BUDGET_MS;
    let i = 0;
    while (Date.now() < end || i < 200) {
      const toml = i % 2 === 1;
      counts[check(mutate(toml ? TOML_SEED : YAML_SEED, r), toml ? "/f.toml" : "/f.yaml")]++;
      counts[check(`data_capture: ${randomDoc(r)}\nadmin: ${randomDoc(r)}\n${randomDoc(r).slice(1, -1).replace(/, /g, "\n")}\n`, "/r.yaml")]++;
      i++;
    }
    expect(counts.ok).toBeGreaterThan(0);
    expect(counts.error).toBeGreaterThan(0);
  });

  test("hostile inputs: alias bombs, deep nesting, long lines, prototype keys, odd bytes", () => {
    const laughs = ["a: &a [x,x,x,x,x,x,x,x,x]"];
    for (const [i, c] of ["b", "c", "d", "e", "f", "g", "h", "i"].entries()) laughs.push(`${c}: &${c} [${Array(9).fill(`*${i === 0 ? "a" : ["b", "c", "d", "e", "f", "g", "h"][i - 1]}`).join(",")}]`);
    const cases: [string, string][] = [
      [laughs.join("\n") + "\n", "/bomb.yaml"],
      ["a: " + "[".repeat(100_000) + "]".repeat(100_000) + "\n", "/deep.yaml"],
      ["a = " + "[".repeat(100_000) + "]".repeat(100_000) + "\n", "/deep.toml"],
      ["a:\n" + Array.from({ length: 3000 }, (_, i) => " ".repeat(i + 1) + "b:").join("\n") + " 1\n", "/deepmap.yaml"],
      ["mode: ingress" + " ".repeat(200_000) + "x\n", "/spaces.yaml"],
      ["mode: " + "x".repeat(1_000_000) + "\n", "/long.yaml"],
      ["__proto__:\n  mode: egress\n", "/proto.yaml"],
      ["constructor: 1\n", "/ctor.yaml"],
      ["[__proto__]\nmode = \"egress\"\n", "/proto.toml"],
      ["\u0000\u0001\u0002mode: ingress\n", "/nul.yaml"],
      ["\ufeffmode: egress\n", "/bom.yaml"],
      ["mode: ingress\n".repeat(50_000), "/dup.yaml"],
      ["targets:\n" + "  - port: 1\n".repeat(20_000), "/many.yaml"],
      ["data_capture:\n  redact:\n    custom_patterns: ['(a+)+$']\n", "/redos.yaml"],
      ["exporter: \"file:\"\n", "/f.yaml"],
      ["-\n", "/dash.yaml"], // a list holding null (found by this fuzzer: crashed the loader)
      ["- - a\n", "/nested.yaml"],
      ["---\n---\n", "/docs.yaml"],
    ];
    for (const [text, path] of cases) check(text, path);
    // prototype keys are unknown keys, not silently accepted
    expect(() => parseConfigText("__proto__:\n  mode: egress\n", "/p.yaml")).toThrow('key "__proto__": unknown key');
    expect(() => parseConfigText("constructor: 1\n", "/p.yaml")).toThrow('key "constructor": unknown key');
    // long values are cut in messages
    try {
      parseConfigText("mode: " + "x".repeat(10_000) + "\n", "/long.yaml");
    } catch (e) {
      expect((e as Error).message.length).toBeLessThan(300);
    }
  });
});
