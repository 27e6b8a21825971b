import { describe, expect, test } from "bun:test";
import { compileRules, decide, kernelNeeds, serviceNameFor, type ProcessFacts } from "../../src/selection/rules.ts";
import { parseConfigText } from "../../src/config/config.ts";
import { containerIdOf, findCgroup2Root, systemdUnitOf } from "../../src/selection/cgroups.ts";

function rules(yaml: string) {
  return compileRules(parseConfigText(yaml, "test.yaml"));
}

const node: ProcessFacts = { pid: 10, comm: "node", exe: "/usr/bin/node", cmdline: "node /srv/orders/server.js", cgroup: "/system.slice/orders.service", ports: [8080] };
const nginx: ProcessFacts = { pid: 11, comm: "nginx", exe: "/usr/sbin/nginx", cmdline: "nginx: worker process", cgroup: "/system.slice/nginx.service", ports: [80] };
const dockerd: ProcessFacts = { pid: 12, comm: "python3", exe: "/usr/bin/python3.11", cmdline: "python3 app.py", cgroup: "/system.slice/docker-3f2a9c0123456789abcdef0123456789abcdef0123456789abcdef0123456789.scope", ports: [] };
const sshd: ProcessFacts = { pid: 13, comm: "sshd", exe: "/usr/sbin/sshd", cmdline: "sshd: /usr/sbin/sshd -D", cgroup: "/system.slice/ssh.service", ports: [22] };

describe("rules", () => {
  test("all fields of a target must match; the first matching target wins", () => {
    const r = rules(`
mode: ingress
targets:
  - service_name: orders-api
    exe: /usr/bin/node
    cmdline: "server\\\\.js"
    mode: ingress_and_egress
  - exe: node
    mode: egress
`);
    const d = decide(r, node);
    expect(d).toMatchObject({ selected: true, mode: "ingress_and_egress" });
    expect(serviceNameFor(d, node)).toBe("orders-api");
    const other = decide(r, { ...node, cmdline: "node other.js" });
    expect(other).toMatchObject({ selected: true, mode: "egress" });
    expect(serviceNameFor(other, node)).toBe("orders");
  });

  test("exe globs on path or file name", () => {
    const r = rules(`targets:\n  - exe: "/usr/*/ngin?"\n  - exe: "python3*"`);
    expect(decide(r, nginx).selected).toBe(true);
    expect(decide(r, dockerd).selected).toBe(true);
    expect(decide(r, node).selected).toBe(false);
  });

  test("systemd unit, cgroup glob (ancestors too), container prefix, port, pid", () => {
    expect(decide(rules(`targets:\n  - systemd_unit: nginx.service`), nginx).selected).toBe(true);
    expect(decide(rules(`targets:\n  - systemd_unit: nginx`), nginx).selected).toBe(true);
    expect(decide(rules(`targets:\n  - systemd_unit: nginx`), node).selected).toBe(false);
    expect(decide(rules(`targets:\n  - cgroup: /system.slice/docker-*.scope`), dockerd).selected).toBe(true);
    expect(decide(rules(`targets:\n  - cgroup: /system.slice`), dockerd).selected).toBe(true);
    expect(decide(rules(`targets:\n  - cgroup: /user.slice`), dockerd).selected).toBe(false);
    expect(decide(rules(`targets:\n  - container: 3F2A9C`), dockerd).selected).toBe(true);
    expect(decide(rules(`targets:\n  - container: 3f2a9d`), dockerd).selected).toBe(false);
    expect(decide(rules(`targets:\n  - port: 8080`), node).selected).toBe(true);
    expect(decide(rules(`targets:\n  - pid: 11`), nginx).selected).toBe(true);
  });

  test("exclude_processes wins over targets and capture_all", () => {
    const r = rules(`capture_all: true\nexclude_processes: [sshd]\ntargets:\n  - port: 22`);
    expect(decide(r, sshd)).toMatchObject({ selected: false, excluded: true });
    expect(decide(r, nginx)).toMatchObject({ selected: true, mode: "ingress" });
  });

  test("capture.* lists are targets too", () => {
    const r = rules(`capture:\n  exe: [nginx]\n  pids: [12]\n  ports: [8080]`);
    expect(decide(r, nginx).selected && decide(r, dockerd).selected && decide(r, node).selected).toBe(true);
    expect(decide(r, sshd).selected).toBe(false);
  });

  test("kernel needs: plain exe names are matched in the kernel, the rest needs exec events", () => {
    expect(kernelNeeds(rules(`targets:\n  - exe: nginx\n  - pid: 5`))).toEqual({ execEvents: false, listenEvents: false, cgroups: false });
    expect(kernelNeeds(rules(`targets:\n  - exe: "ngin*"`)).execEvents).toBe(true);
    expect(kernelNeeds(rules(`targets:\n  - port: 80`))).toMatchObject({ execEvents: true, listenEvents: true });
    expect(kernelNeeds(rules(`targets:\n  - systemd_unit: a`)).cgroups).toBe(true);
    const r = rules(`targets:\n  - exe: /usr/sbin/nginx\n  - exe: node\n    cmdline: x`);
    expect(r.targets[0]!.kernelExe).toBe("/usr/sbin/nginx");
    expect(r.targets[1]!.kernelExe).toBeUndefined();
  });

  test("cgroup path helpers", () => {
    expect(systemdUnitOf("/system.slice/nginx.service")).toBe("nginx.service");
    expect(systemdUnitOf("/user.slice/user-0.slice/session-1.scope")).toBe("session-1.scope");
    expect(systemdUnitOf("/")).toBeUndefined();
    expect(containerIdOf("/kubepods/besteffort/pod1/cri-containerd-abcdef0123456789.scope")).toBe("abcdef0123456789");
    expect(containerIdOf("/docker/0123456789abcdef0123")).toBe("0123456789abcdef0123");
    expect(containerIdOf("/machine.slice/libpod-aaaaaaaaaaaa.scope")).toBe("aaaaaaaaaaaa");
    expect(findCgroup2Root("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n")).toBe("/sys/fs/cgroup");
    expect(findCgroup2Root("tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n")).toBe("/sys/fs/cgroup/unified");
    expect(findCgroup2Root("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n")).toBeUndefined();
  });
});

describe("executable matching through names and symlinks", () => {
  test("a name matches the file name or the comm; a path matches through symlinks", () => {
    const py: ProcessFacts = { pid: 1, comm: "python3", exe: "/usr/bin/python3.11", cmdline: "python3 -m http.server", cgroup: "/", ports: [] };
    expect(decide(rules(`targets:\n  - exe: python3`), py).selected).toBe(true);
    expect(decide(rules(`targets:\n  - exe: python3.11`), py).selected).toBe(true);
    expect(decide(rules(`targets:\n  - exe: python2`), py).selected).toBe(false);
    const viaLink = rules(`targets:\n  - exe: /usr/bin/python3`);
    const real = require("node:fs").realpathSync("/usr/bin/python3");
    expect(decide(viaLink, { ...py, exe: real }).selected).toBe(true);
    expect(decide(viaLink, { ...py, exe: "/usr/bin/python3" }).selected).toBe(true);
  });
});

describe("process tree", () => {
  test("descendants come parents first and exclude the roots", () => {
    const { descendants } = require("../../src/selection/procfs.ts") as typeof import("../../src/selection/procfs.ts");
    const p = (pid: number, ppid: number) => ({ pid, ppid, comm: "", exe: "", cmdline: [], cgroup: "" });
    const procs = [p(5, 3), p(3, 1), p(4, 1), p(1, 0), p(6, 5), p(7, 2)];
    expect(descendants([1], procs).map((x) => x.pid)).toEqual([3, 4, 5, 6]);
    expect(descendants([5, 2], procs).map((x) => x.pid)).toEqual([6, 7]);
  });
});
