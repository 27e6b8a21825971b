/**
 * docs/fleet.md's examples stay valid: each YAML block parses (Bun.YAML); the agent
 * configurations inside the Ansible role and the cloud-init file pass the compiled binary's
 * `ebpf-tracer config validate` (skipped, saying so, before `bun run build`); the collector
 * configuration has an OTLP receiver, batching and a load-balancing exporter wired into a traces
 * pipeline; every metric the health section names is served by a running agent (root only).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const REPO = join(import.meta.dir, "..", "..");
const DOC = readFileSync(join(REPO, "docs", "fleet.md"), "utf8");
const BIN = join(REPO, "dist", "ebpf-tracer");
const work = mkdtempSync(join(tmpdir(), "fleet-doc-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** The fenced block right after `<!-- fleet-example: NAME -->`. */
function example(name: string): string {
  const m = new RegExp(`<!-- fleet-example: ${name} -->\\n\`\`\`yaml\\n([\\s\\S]*?)\\n\`\`\`\\n`).exec(DOC);
  if (!m) throw new Error(`docs/fleet.md has no yaml block marked fleet-example: ${name}`);
  return m[1]!;
}

function validate(configText: string, name: string): { code: number; out: string } {
  const file = join(work, `${name}.yaml`);
  writeFileSync(file, configText);
  const p = Bun.spawnSync([BIN, "config", "validate", "-c", file], { stdout: "pipe", stderr: "pipe" });
  return { code: p.exitCode ?? -1, out: (p.stdout.toString() + p.stderr.toString()).trim() };
}

type Obj = Record<string, unknown>;
const haveBinary = existsSync(BIN);
if (!haveBinary) console.warn("skipping the config-validate checks of docs/fleet.md: dist/ebpf-tracer is not built (bun run build)");

describe("docs/fleet.md examples", () => {
  test("every yaml block in the document parses", () => {
    const blocks = [...DOC.matchAll(/```yaml\n([\s\S]*?)\n```/g)].map((m) => m[1]!);
    expect(blocks.length).toBeGreaterThanOrEqual(4);
    for (const b of blocks) expect(() => Bun.YAML.parse(b)).not.toThrow();
  });

  test.skipIf(!haveBinary)("Ansible role: the config it writes passes `ebpf-tracer config validate`; the install is pinned", () => {
    const tasks = Bun.YAML.parse(example("ansible")) as Obj[];
    const copy = tasks.find((t) => (t["ansible.builtin.copy"] as Obj | undefined)?.dest === "/etc/traceable/ebpf-tracer-config.yaml")?.["ansible.builtin.copy"] as Obj;
    expect(typeof copy?.content).toBe("string");
    expect(validate(copy.content as string, "ansible")).toEqual({ code: 0, out: expect.stringMatching(/^ok: /) });
    const shell = tasks.map((t) => t["ansible.builtin.shell"]).find((s) => typeof s === "string") as string;
    expect(shell).toContain("/install.sh | bash -s -- --version {{ ebpf_tracer_version }}");
  });

  test.skipIf(!haveBinary)("cloud-init: the config it writes passes `ebpf-tracer config validate`; the install is pinned", () => {
    const text = example("cloud-init");
    expect(text.startsWith("#cloud-config\n")).toBe(true);
    const ci = Bun.YAML.parse(text) as { write_files: { path: string; content: string }[]; runcmd: string[][] };
    const cfg = ci.write_files.find((f) => f.path === "/etc/traceable/ebpf-tracer-config.yaml");
    expect(validate(cfg!.content, "cloud-init")).toEqual({ code: 0, out: expect.stringMatching(/^ok: /) });
    expect(ci.runcmd.flat().join(" ")).toMatch(/install\.sh \| bash -s -- --version \d+\.\d+\.\d+/);
  });

  test("a broken agent config in the same place would be caught", () => {
    if (!haveBinary) return;
    const tasks = Bun.YAML.parse(example("ansible")) as Obj[];
    const content = (tasks.find((t) => t["ansible.builtin.copy"] && (t["ansible.builtin.copy"] as Obj).content)!["ansible.builtin.copy"] as Obj).content as string;
    const r = validate(content.replace("mode: ingress", "mode: sideways"), "broken");
    expect(r.code).toBe(78);
    expect(r.out).toContain("mode");
  });

  test("collector: OTLP receiver, memory_limiter + batch, loadbalancing exporter by trace id, in the traces pipeline", () => {
    const c = Bun.YAML.parse(example("collector")) as Obj;
    const receivers = c.receivers as Obj;
    const otlpHttp = ((receivers.otlp as Obj).protocols as Obj).http as Obj;
    expect(otlpHttp.endpoint).toBe("0.0.0.0:4318");
    expect(Object.keys(c.processors as Obj)).toEqual(expect.arrayContaining(["batch", "memory_limiter"]));
    const lb = (c.exporters as Obj).loadbalancing as Obj;
    expect(lb.routing_key).toBe("traceID");
    expect(Object.keys(lb.protocol as Obj)).toEqual(["otlp"]);
    expect(((lb.resolver as Obj).dns as Obj).hostname).toBeString();
    const traces = ((c.service as Obj).pipelines as Obj).traces as Obj;
    expect(traces).toEqual({ receivers: ["otlp"], processors: ["memory_limiter", "batch"], exporters: ["loadbalancing"] });
    // every component the pipeline names is defined
    for (const kind of ["receivers", "processors", "exporters"] as const) {
      for (const name of traces[kind] as string[]) expect(Object.keys(c[kind] as Obj)).toContain(name);
    }
    // the agents' endpoint in the examples is this receiver's port
    expect(example("ansible")).toContain("endpoint: otel-gateway.internal:4318");
  });

  test.skipIf(!haveBinary || process.getuid?.() !== 0)("the health section names only metrics a running agent serves on /metrics", async () => {
    const section = DOC.slice(DOC.indexOf("## Host health from /metrics"));
    const named = new Set([...section.matchAll(/`(?:rate\(|increase\()?(ebpf_tracer_[a-z_{},0-9]+)/g)].flatMap((m) => {
      const n = m[1]!;
      const alt = /\{([a-z0-9_,]+)\}/.exec(n);
      return alt ? alt[1]!.split(",").map((a) => n.replace(alt[0], a)) : [n];
    }));
    expect(named.size).toBeGreaterThanOrEqual(15);
    const { port } = await import("../support/servers.ts");
    const admin = `127.0.0.1:${port()}`;
    const cfg = join(work, "metrics.yaml");
    writeFileSync(cfg, `exporter: otlp\nagent_config:\n  secure: false\n  reporting:\n    endpoint: "http://127.0.0.1:1"\ncapture:\n  exe: [fleet-doc-nothing]\nadmin:\n  address: ${admin}\n`);
    const agent = Bun.spawn([BIN, "run", "-c", cfg], { stdout: "ignore", stderr: "pipe" });
    try {
      let text = "";
      for (let i = 0; i < 120 && !text; i++) {
        await Bun.sleep(250);
        text = await fetch(`http://${admin}/metrics`).then((r) => r.text(), () => "");
      }
      const served = new Set(text.split("\n").filter((l) => l && !l.startsWith("#")).map((l) => l.split(/[ {]/)[0]!));
      expect([...named].filter((m) => !served.has(m))).toEqual([]);
    } finally {
      agent.kill("SIGINT");
      await agent.exited;
    }
  }, 60_000);
});
