/**
 * Root test of `ebpf-tracer top` through the compiled binary, in a real terminal: tmux (80×24)
 * runs `top` against a running agent's admin endpoint, real traffic goes to a Node server, and
 * capture-pane must show the routes with the totals sent; sort keys change the order; q exits
 * cleanly (status 0, terminal restored). Also: plain lines when stdout is not a terminal, and the
 * standalone mode (`top --port N`, capturing by itself).
 */
import { mkdtempSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { BIN, rootSkipReason, TracerProcess } from "../support/tracer.ts";
import { port, startNode, type Server } from "../support/servers.ts";
import { Cleanups, curlOk, NODE_APP, run } from "../support/http-kit.ts";
import { toYaml } from "../support/yaml.ts";

const SKIP = rootSkipReason() ?? (existsSync("/usr/bin/tmux") ? undefined : "tmux is not installed (scripts/install-deps.sh)");
if (SKIP) console.warn(`test/root/top.test.ts skipped: ${SKIP}`);

const c = new Cleanups();
afterEach(() => c.run());
setDefaultTimeout(90_000);

function tmux(...args: string[]): string {
  const r = run(["tmux", ...args]);
  if (r.code !== 0) throw new Error(`tmux ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** A detached 80×24 tmux session running `cmd`; the pane stays after the command ends. */
function session(cmd: string): string {
  const name = `et-top-${process.pid}-${Math.floor(Math.random() * 1e6)}`;
  tmux("new-session", "-d", "-s", name, "-x", "80", "-y", "24", `${cmd}; echo "TOP EXITED $?"; sleep 30`);
  c.add(name, (n) => run(["tmux", "kill-session", "-t", n]));
  return name;
}

const pane = (name: string): string => tmux("capture-pane", "-p", "-t", name);

async function paneUntil(name: string, pred: (text: string) => boolean, timeoutMs = 15_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = pane(name);
    if (pred(text)) return text;
    if (Date.now() > deadline) throw new Error(`pane never matched; last:\n${text}`);
    await Bun.sleep(100);
  }
}

/** The row of `route` in the pane: its columns (route, dir, req/s, err%, p50, p95, p99, total, bytes/s). */
function row(text: string, route: string): string[] | undefined {
  const line = text.split("\n").find((l) => l.startsWith(route + " "));
  return line?.trim().split(/\s+/);
}

async function agentWithAdmin(server: Server): Promise<string> {
  const dir = c.add(mkdtempSync(join(tmpdir(), "et-top-")), (d) => rmSync(d, { recursive: true, force: true }));
  const admin = `127.0.0.1:${port()}`;
  const cfgPath = join(dir, "cfg.yaml");
  writeFileSync(cfgPath, toYaml({
    exporter: `file:${join(dir, "spans.jsonl")}`,
    stats_interval: "0s",
    admin: { enabled: true, address: admin },
    targets: [{ port: server.port, service_name: "top-api" }],
    spool: { max_size_mb: 0 },
    metrics: { inventory_path: join(dir, "apis.json") },
  }).replace(/^\n/, ""));
  c.add(await TracerProcess.start(["run", "-c", cfgPath], "capture started"), (t) => t.stop("SIGTERM"));
  return admin;
}

function traffic(server: Server, users: number, errors: number): void {
  const base = `http://127.0.0.1:${server.port}`;
  curlOk([...Array.from({ length: users }, (_, i) => `${base}/users/${i + 1}`), ...Array.from({ length: errors }, () => `${base}/status/500`)]);
}

describe.skipIf(!!SKIP)("ebpf-tracer top (root, compiled binary, tmux)", () => {
  test("shows the routes of real traffic in 80x24, sorts by key, quits on q", async () => {
    const server = c.add(await startNode(NODE_APP), (s) => s.stop());
    const admin = await agentWithAdmin(server);
    const s = session(`${BIN} top --address ${admin} --interval 500ms`);
    await paneUntil(s, (t) => t.includes("ebpf-tracer top"));
    traffic(server, 30, 10);
    const text = await paneUntil(s, (t) => row(t, "/users/{id}")?.[7] === "30" && row(t, "/status/{id}")?.[7] === "10");
    const lines = text.split("\n");
    expect(lines.every((l) => l.length <= 80)).toBe(true);
    expect(lines[0]).toContain("top-api");
    expect(lines[1]).toMatch(/healthy · events lost 0/);
    expect(row(text, "/status/{id}")?.[3]).toBe("100.0"); // error %: every /status/500 is a server error
    expect(row(text, "/users/{id}")?.[3]).toBe("0.0"); // 404 is not a server error
    // sorted by total (default): /users/{id} (30) above /status/{id} (10)
    const order = () => { const t = pane(s); return [t.indexOf("/users/{id}"), t.indexOf("/status/{id}")]; };
    expect(order()[0]).toBeLessThan(order()[1]!);
    tmux("send-keys", "-t", s, "e"); // by error %
    await paneUntil(s, (t) => t.includes("sort: errors") && t.indexOf("/status/{id}") < t.indexOf("/users/{id}"), 5000);
    tmux("send-keys", "-t", s, "q");
    const after = await paneUntil(s, (t) => t.includes("TOP EXITED"), 5000);
    expect(after).toContain("TOP EXITED 0");
    expect(after).not.toContain("ebpf-tracer top ·"); // alternate screen left: the view is gone
  });

  test("Ctrl-C exits cleanly too; plain lines when stdout is not a terminal", async () => {
    const server = c.add(await startNode(NODE_APP), (s) => s.stop());
    const admin = await agentWithAdmin(server);
    traffic(server, 5, 0);
    const s = session(`${BIN} top --address ${admin}`);
    await paneUntil(s, (t) => row(t, "/users/{id}")?.[7] === "5");
    tmux("send-keys", "-t", s, "C-c");
    expect(await paneUntil(s, (t) => t.includes("TOP EXITED"), 5000)).toContain("TOP EXITED 0");

    await Bun.sleep(1200);
    const plain = run([BIN, "top", "--address", admin, "-n", "2", "--interval", "300ms"]);
    expect(plain.code).toBe(0);
    expect(plain.stdout).not.toContain("\x1b");
    const frames = plain.stdout.trim().split("\n\n");
    expect(frames.length).toBe(2);
    expect(frames[1]).toMatch(/\/users\/\{id\}\s+in\s+0\s+0\.0\s+\S+\s+\S+\s+\S+\s+5\s/);

    const down = run([BIN, "top", "--address", `127.0.0.1:${port()}`, "-n", "1"]);
    expect(down.code).toBe(3);
    expect(down.stderr).toContain("cannot read the agent");
  });

  test("standalone: top --port N captures by itself", async () => {
    const server = c.add(await startNode(NODE_APP), (s) => s.stop());
    const s = session(`${BIN} top --port ${server.port} --interval 500ms`);
    await paneUntil(s, (t) => t.includes("ebpf-tracer top") && t.includes("capturing"), 20_000);
    await Bun.sleep(500);
    traffic(server, 12, 0);
    await paneUntil(s, (t) => row(t, "/users/{id}")?.[7] === "12");
    tmux("send-keys", "-t", s, "q");
    expect(await paneUntil(s, (t) => t.includes("TOP EXITED"), 10_000)).toContain("TOP EXITED 0");
  });
});
