/**
 * Root test of the API inventory through the compiled binary: `ebpf-tracer run` captures a Node
 * server, `ebpf-tracer apis --json` lists what was seen (routes, methods, statuses, content types,
 * auth schemes without their values), and the inventory survives a restart of the agent: counts
 * add up, first-seen times are kept, new routes are added, and --new-since tells them apart.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { BIN, rootSkipReason, TracerProcess } from "../support/tracer.ts";
import { startNode, type Server } from "../support/servers.ts";
import { Cleanups, curlOk, NODE_APP, run } from "../support/http-kit.ts";
import { toYaml } from "../support/yaml.ts";

const SKIP = rootSkipReason();
if (SKIP) console.warn(`test/root/apis.test.ts skipped: ${SKIP}`);

const c = new Cleanups();
afterEach(() => c.run());
setDefaultTimeout(90_000);

interface Api {
  service: string;
  direction: string;
  route: string;
  methods: string[];
  statusCodes: number[];
  count: number;
  firstSeen: string;
  lastSeen: string;
  requestContentTypes: string[];
  responseContentTypes: string[];
  authSchemes: string[];
  transport: string;
}

function apis(cfgPath: string, ...extra: string[]): Api[] {
  const r = run([BIN, "apis", "-c", cfgPath, "--json", ...extra]);
  if (r.code !== 0) throw new Error(`apis failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout);
}

async function runAgent(cfgPath: string): Promise<TracerProcess> {
  return TracerProcess.start(["run", "-c", cfgPath], "capture started");
}

describe.skipIf(!!SKIP)("ebpf-tracer apis (root, compiled binary)", () => {
  test("lists the APIs seen, and survives a restart", async () => {
    const dir = c.add(mkdtempSync(join(tmpdir(), "et-apis-")), (d) => rmSync(d, { recursive: true, force: true }));
    const server: Server = c.add(await startNode(NODE_APP), (s) => s.stop());
    const cfgPath = join(dir, "cfg.yaml");
    const inventory = join(dir, "state", "apis.json");
    writeFileSync(cfgPath, toYaml({
      exporter: `file:${join(dir, "spans.jsonl")}`,
      stats_interval: "0s",
      admin: { enabled: false },
      targets: [{ port: server.port, service_name: "inventory-api" }],
      spool: { max_size_mb: 0 },
      metrics: { inventory_path: inventory },
    }).replace(/^\n/, ""));
    const base = `http://127.0.0.1:${server.port}`;

    // first run
    let agent = c.add(await runAgent(cfgPath), (t) => t.stop("SIGTERM"));
    curlOk(["-H", "Authorization: Bearer top-secret-token-1", ...Array.from({ length: 20 }, (_, i) => `${base}/users/${i + 1}`)]);
    curlOk(["-X", "POST", "-H", "Content-Type: application/json", "-H", "X-Api-Key: key-value-2", "--data", '{"a":1}', `${base}/echo`]);
    await Bun.sleep(500);
    expect(await agent.stop("SIGTERM")).toBe(0);
    const first = apis(cfgPath);
    const users = first.find((a) => a.route === "/users/{id}")!;
    expect(users).toMatchObject({ service: "inventory-api", direction: "server", methods: ["GET"], statusCodes: [404], count: 20, responseContentTypes: ["text/plain"], authSchemes: ["bearer"], transport: "plain" });
    expect(first.find((a) => a.route === "/echo")).toMatchObject({ methods: ["POST"], statusCodes: [200], count: 1, requestContentTypes: ["application/json"], authSchemes: ["header:x-api-key"] });
    expect(readFileSync(inventory, "utf8")).not.toMatch(/top-secret|key-value-2/);

    // restart: counts continue, first-seen kept, a new route appears
    await Bun.sleep(1100); // first-seen times are in whole seconds in the listing
    const secondRun = Date.now();
    agent = c.add(await runAgent(cfgPath), (t) => t.stop("SIGTERM"));
    curlOk(Array.from({ length: 5 }, (_, i) => `${base}/users/${100 + i}`));
    curlOk(["-X", "DELETE", `${base}/users/7`, `${base}/json`]);
    await Bun.sleep(500);
    expect(await agent.stop("SIGTERM")).toBe(0);
    const second = apis(cfgPath);
    const users2 = second.find((a) => a.route === "/users/{id}")!;
    expect(users2.count).toBe(26);
    expect(users2.methods.sort()).toEqual(["DELETE", "GET"]);
    expect(users2.firstSeen).toBe(users.firstSeen);
    expect(users2.lastSeen >= users.lastSeen).toBe(true);
    expect(second.find((a) => a.route === "/json")).toMatchObject({ count: 1, statusCodes: [200], responseContentTypes: ["application/json"] });
    expect(second.length).toBe(first.length + 1);

    // --new-since: the second run's new route only; everything with a window back to the first run
    expect(apis(cfgPath, "--new-since", `${Date.now() - secondRun}ms`).map((a) => a.route)).toEqual(["/json"]);
    expect(apis(cfgPath, "--new-since", "1h").length).toBe(second.length);
    const table = run([BIN, "apis", "-c", cfgPath]);
    expect(table.stdout.split("\n")[0]).toMatch(/^SERVICE\s+DIR\s+ROUTE/);
    expect(table.stdout).toMatch(/inventory-api\s+in\s+\/users\/\{id\}\s+DELETE,GET|inventory-api\s+in\s+\/users\/\{id\}\s+GET,DELETE/);
  });
});
