/**
 * cgroup v2 facts: a cgroup's id is the inode number of its directory under the unified mount
 * (what bpf_get_current_cgroup_id returns), and systemd units and container runtimes are
 * recognisable in cgroup paths.
 */
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";

/** Where the unified (v2) hierarchy is mounted, from mounts text: /sys/fs/cgroup on pure v2
 * hosts, /sys/fs/cgroup/unified on hybrid ones; undefined on v1-only hosts. */
export function findCgroup2Root(mountsText?: string): string | undefined {
  let text = mountsText;
  if (text === undefined) {
    try {
      text = readFileSync("/proc/self/mounts", "utf8");
    } catch {
      return undefined;
    }
  }
  for (const line of text.split("\n")) {
    const f = line.split(" ");
    if (f[2] === "cgroup2") return f[1];
  }
  return undefined;
}

export const CGROUP_ROOT = findCgroup2Root() ?? "/sys/fs/cgroup";

/** True when `root` is a cgroup v2 hierarchy. */
export function isCgroupV2(root = CGROUP_ROOT): boolean {
  return existsSync(`${root}/cgroup.controllers`) || existsSync(`${root}/cgroup.procs`) && existsSync(`${root}/cgroup.subtree_control`);
}

export function cgroupId(path: string, root = CGROUP_ROOT): bigint | undefined {
  try {
    return statSync(root + path, { bigint: true }).ino;
  } catch {
    return undefined;
  }
}

/** Every cgroup path under `root` (depth-first), "/"-rooted. */
export function walkCgroups(root = CGROUP_ROOT, maxDirs = 100_000): string[] {
  const out: string[] = ["/"];
  const stack = [""];
  while (stack.length && out.length < maxDirs) {
    const rel = stack.pop()!;
    let entries: import("node:fs").Dirent[];
    try {
      entries = readdirSync(root + (rel || "/"), { withFileTypes: true });
    } catch {
      continue;
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const p = `${rel}/${e.name}`;
      out.push(p);
      stack.push(p);
    }
  }
  return out;
}

/** The systemd unit a cgroup path belongs to: the innermost .service/.scope segment. */
export function systemdUnitOf(path: string): string | undefined {
  const segs = path.split("/").filter(Boolean);
  for (let i = segs.length - 1; i >= 0; i--) {
    if (/\.(service|scope)$/.test(segs[i]!)) return segs[i];
  }
  return undefined;
}

const CONTAINER_PATTERNS = [
  /docker-([0-9a-f]{12,64})\.scope/,       // docker with systemd cgroup driver
  /\/docker\/([0-9a-f]{12,64})/,           // docker with cgroupfs driver
  /cri-containerd-([0-9a-f]{12,64})\.scope/,
  /crio-([0-9a-f]{12,64})\.scope/,
  /libpod-([0-9a-f]{12,64})\.scope/,       // podman
  /\/containerd\/([0-9a-f]{12,64})/,
];

/** Container id from a cgroup path (docker, containerd, cri-o, podman naming), if any. */
export function containerIdOf(path: string): string | undefined {
  for (const re of CONTAINER_PATTERNS) {
    const m = re.exec(path);
    if (m) return m[1];
  }
  return undefined;
}

const MISS_RETRY_MS = 200;

/** Resolves cgroup ids back to paths, walking the hierarchy again when an id is new. */
export class CgroupPaths {
  private byId = new Map<bigint, string>();
  /** ids a walk did not find, and when: looked for again only after MISS_RETRY_MS */
  private missedAt = new Map<bigint, number>();
  constructor(private readonly root = CGROUP_ROOT) {}
  pathOf(id: bigint): string | undefined {
    let p = this.byId.get(id);
    if (p !== undefined) return p;
    // A new id is a cgroup made after the last walk (systemd makes a unit's cgroup and execs in
    // it at once): walk again whenever an id is new, however recent the last walk was. Only ids
    // a walk already missed (e.g. removed cgroups) are rate-limited.
    const missed = this.missedAt.get(id);
    if (missed !== undefined && Date.now() - missed <= MISS_RETRY_MS) return undefined;
    this.rewalk();
    p = this.byId.get(id);
    if (p === undefined) {
      if (this.missedAt.size >= 4096) this.missedAt.clear();
      this.missedAt.set(id, Date.now());
    }
    return p;
  }
  rewalk(): void {
    this.byId.clear();
    for (const path of walkCgroups(this.root)) {
      const id = cgroupId(path, this.root);
      if (id !== undefined) this.byId.set(id, path);
    }
  }
}
