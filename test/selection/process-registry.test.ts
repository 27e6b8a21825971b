/** The registry of selected processes' details: what selection set survives an exec event that
 * arrives after it, and forks inherit it. */
import { describe, expect, test } from "bun:test";
import { ProcessRegistry } from "../../src/selection/process-registry.ts";
import type { ProcEvent } from "../../src/kernel/event-decoder.ts";

function ev(kind: ProcEvent["kind"], tgid: number, o: Partial<ProcEvent> = {}): ProcEvent {
  return { kind, tgid, tid: tgid, tsNs: 1, ppid: 1, mode: 3, cgroupId: 0n, comm: "nginx", path: "/usr/sbin/nginx", args: ["nginx"], ...o };
}

describe("ProcessRegistry", () => {
  test("an exec seen after the selector set a service name and a rate limit keeps both; the new image's facts replace the old", () => {
    const r = new ProcessRegistry("/nonexistent");
    r.setServiceName(4000, "web");
    r.get(4000).maxSpansPerSecond = 50;
    r.onEvent(ev("exec", 4000, { path: "/usr/sbin/nginx", args: ["nginx", "-g", "daemon off;"] }));
    expect(r.get(4000)).toMatchObject({ pid: 4000, name: "nginx", exePath: "/usr/sbin/nginx", commandLine: "nginx -g daemon off;", serviceName: "web", maxSpansPerSecond: 50 });
  });

  test("a fork inherits its parent's details, its own pid", () => {
    const r = new ProcessRegistry("/nonexistent");
    r.onEvent(ev("exec", 4000));
    r.get(4000).maxSpansPerSecond = 50;
    r.onEvent(ev("fork", 4001, { ppid: 4000 }));
    expect(r.get(4001)).toMatchObject({ pid: 4001, name: "nginx", maxSpansPerSecond: 50 });
  });
});
