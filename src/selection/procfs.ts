/**
 * Reading /proc: processes (for selection and span attributes) and listening TCP ports (to
 * classify sockets that existed before the agent started). Errors for processes that vanish
 * mid-read are expected and yield undefined.
 */
import { readFileSync, readdirSync, readlinkSync } from "node:fs";

export interface ProcInfo {
  pid: number;
  ppid: number;
  comm: string;
  exe: string;        // resolved /proc/PID/exe, "" when unreadable (kernel threads, exited)
  cmdline: string[];
  cgroup: string;     // cgroup v2 path ("0::/system.slice/x.service" → "/system.slice/x.service")
}

export function listPids(root = "/proc"): number[] {
  const out: number[] = [];
  for (const d of readdirSync(root)) {
    const c = d.charCodeAt(0);
    if (c >= 48 && c <= 57) out.push(Number(d));
  }
  return out;
}

function read(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

export function readProc(pid: number, root = "/proc"): ProcInfo | undefined {
  const stat = read(`${root}/${pid}/stat`);
  if (!stat) return undefined;
  // comm may contain spaces and parentheses: it runs from the first "(" to the last ")".
  const open = stat.indexOf("(");
  const close = stat.lastIndexOf(")");
  const comm = stat.slice(open + 1, close);
  const rest = stat.slice(close + 2).split(" ");
  const ppid = Number(rest[1]);
  let exe = "";
  try {
    exe = readlinkSync(`${root}/${pid}/exe`);
  } catch {
    /* kernel thread or gone */
  }
  const cmd = read(`${root}/${pid}/cmdline`) ?? "";
  const cmdline = cmd.split("\0");
  // Trailing NULs: the terminator, and the padding of processes that rewrote their argv area
  // (nginx: "nginx: worker process\0\0\0...").
  while (cmdline.length && cmdline[cmdline.length - 1] === "") cmdline.pop();
  return { pid, ppid, comm, exe: exe.replace(/ \(deleted\)$/, ""), cmdline, cgroup: parseCgroup(read(`${root}/${pid}/cgroup`) ?? "") };
}

/** Every readable process now. */
export function scanProcs(root = "/proc"): ProcInfo[] {
  return listPids(root).map((p) => readProc(p, root)).filter((p): p is ProcInfo => !!p);
}

/** The descendants of `roots` among `procs`, parents before their children. */
export function descendants(roots: Iterable<number>, procs: ProcInfo[]): ProcInfo[] {
  const children = new Map<number, ProcInfo[]>();
  for (const p of procs) {
    const list = children.get(p.ppid);
    if (list) list.push(p);
    else children.set(p.ppid, [p]);
  }
  const out: ProcInfo[] = [];
  const seen = new Set(roots);
  const queue = [...seen];
  for (let i = 0; i < queue.length; i++) {
    for (const c of children.get(queue[i]!) ?? []) {
      if (seen.has(c.pid)) continue;
      seen.add(c.pid);
      out.push(c);
      queue.push(c.pid);
    }
  }
  return out;
}

/** The unified (v2) hierarchy path from /proc/PID/cgroup text, or "" on v1-only hosts. */
export function parseCgroup(text: string): string {
  for (const line of text.split("\n")) if (line.startsWith("0::")) return line.slice(3);
  return "";
}

export interface Listener {
  port: number;
  inode: number;
}

/** TCP sockets in LISTEN state from /proc/net/tcp{,6} text. */
export function parseListeners(text: string): Listener[] {
  const out: Listener[] = [];
  const lines = text.split("\n");
  for (let i = 1; i < lines.length; i++) {
    const f = lines[i]!.trim().split(/\s+/);
    if (f.length < 10 || f[3] !== "0A") continue;
    const local = f[1]!;
    out.push({ port: parseInt(local.slice(local.indexOf(":") + 1), 16), inode: Number(f[9]) });
  }
  return out;
}

export function listeningPorts(root = "/proc"): Listener[] {
  return [...parseListeners(read(`${root}/net/tcp`) ?? ""), ...parseListeners(read(`${root}/net/tcp6`) ?? "")];
}

/** Calls `fn` for every socket fd of every process (pid, socket inode); unreadable ones are skipped. */
function forEachSocket(root: string, fn: (pid: number, inode: number) => void): void {
  for (const pid of listPids(root)) {
    let fds: string[];
    try {
      fds = readdirSync(`${root}/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let link: string;
      try {
        link = readlinkSync(`${root}/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      if (link.startsWith("socket:[")) fn(pid, Number(link.slice(8, -1)));
    }
  }
}

/** pid → TCP ports it listens on (a socket shared by several processes counts for each). */
export function listeningPortsByPid(root = "/proc"): Map<number, number[]> {
  const portOf = new Map(listeningPorts(root).map((l) => [l.inode, l.port]));
  const out = new Map<number, number[]>();
  if (portOf.size === 0) return out;
  forEachSocket(root, (pid, inode) => {
    const port = portOf.get(inode);
    if (port === undefined) return;
    const list = out.get(pid) ?? [];
    if (!list.includes(port)) list.push(port);
    out.set(pid, list);
  });
  return out;
}
