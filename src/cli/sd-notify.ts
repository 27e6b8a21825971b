/**
 * sd_notify(3) for the systemd unit (Type=notify): "READY=1" once probes are attached,
 * "RELOADING=1" … "READY=1" around a SIGHUP reload, "STOPPING=1" at shutdown, "STATUS=…" lines
 * for `systemctl status`, "WATCHDOG=1" if WatchdogSec= is ever set.
 *
 * How: the notification is a datagram on the AF_UNIX socket named by $NOTIFY_SOCKET. Bun's JS API
 * has no unix datagram sockets (node:dgram is UDP only, Bun.connect/Bun.listen unix are streams),
 * and raw libc socket()/sendto() through bun:ffi is kept out of everything but libbpf-ffi.ts. So we
 * run `systemd-notify VAR=VALUE…` once per notification. It is installed wherever systemd is, and
 * since systemd 246 it waits (BARRIER=1) until the manager has processed the message, so the
 * child exiting right away cannot lose the message. Because the sender is a child process and not
 * the main PID, the unit says NotifyAccess=all (only our own processes live in its cgroup).
 * We notify a handful of times per run, so the cost of a process spawn does not matter.
 *
 * The alternative, Type=exec plus an ExecStartPost= health poll, would need the admin endpoint to
 * be enabled and would not report RELOADING/STOPPING; Type=notify is what `systemctl start`
 * waiting for "probes attached" needs.
 *
 * Without $NOTIFY_SOCKET (not started by systemd, or `capture` in a terminal) every call is a
 * no-op that resolves to false. Failures never throw: they resolve to false and are logged by the
 * caller if it cares.
 */
import { existsSync } from "node:fs";

export interface NotifyResult {
  sent: boolean;
  /** why it was not sent, for a log line */
  reason?: string;
}

const CANDIDATES = ["/usr/bin/systemd-notify", "/bin/systemd-notify", "/usr/local/bin/systemd-notify"];

let notifyBinary: string | null | undefined;

function findSystemdNotify(): string | null {
  if (notifyBinary !== undefined) return notifyBinary;
  notifyBinary = CANDIDATES.find((p) => existsSync(p)) ?? (Bun.which("systemd-notify") || null);
  return notifyBinary;
}

/** For tests: use this program instead of systemd-notify (null: look it up again). */
export function setNotifyBinaryForTest(path: string | null): void {
  notifyBinary = path ?? undefined;
}

/** Whether we were started by a service manager that listens for notifications. */
export function notifyEnabled(env: Record<string, string | undefined> = process.env): boolean {
  const s = env.NOTIFY_SOCKET;
  return !!s && (s.startsWith("/") || s.startsWith("@"));
}

/** Status text is one line: newlines would start a new VAR=VALUE assignment. */
function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, " ").slice(0, 1000);
}

/**
 * Sends the given assignments ("READY=1", "STATUS=…") in one datagram. Resolves once the
 * manager has processed it (or on failure, to { sent: false }).
 */
export async function sdNotify(assignments: string[], env: Record<string, string | undefined> = process.env): Promise<NotifyResult> {
  if (!notifyEnabled(env)) return { sent: false, reason: "NOTIFY_SOCKET is not set" };
  const bin = findSystemdNotify();
  if (!bin) return { sent: false, reason: "systemd-notify is not installed" };
  try {
    const proc = Bun.spawn([bin, ...assignments], {
      env: { PATH: "/usr/bin:/bin", NOTIFY_SOCKET: env.NOTIFY_SOCKET },
      stdin: "ignore",
      stdout: "ignore",
      stderr: "pipe",
    });
    const timer = setTimeout(() => proc.kill(), 10_000);
    const [code, err] = await Promise.all([proc.exited, new Response(proc.stderr).text()]);
    clearTimeout(timer);
    return code === 0 ? { sent: true } : { sent: false, reason: `systemd-notify exited ${code}: ${err.trim()}` };
  } catch (e) {
    return { sent: false, reason: `cannot run ${bin}: ${(e as Error)?.message ?? String(e)}` };
  }
}

/** Startup finished: probes are attached. */
export function notifyReady(status?: string): Promise<NotifyResult> {
  return sdNotify(["READY=1", ...(status ? [`STATUS=${oneLine(status)}`] : [])]);
}

/**
 * A reload (SIGHUP) started; call notifyReady() when it is done. No MONOTONIC_USEC: that is only
 * required by Type=notify-reload (systemd 253+), and Bun has no CLOCK_MONOTONIC reading to give.
 */
export function notifyReloading(status = "reloading configuration"): Promise<NotifyResult> {
  return sdNotify(["RELOADING=1", `STATUS=${oneLine(status)}`]);
}

/** Shutdown started. */
export function notifyStopping(status = "stopping"): Promise<NotifyResult> {
  return sdNotify(["STOPPING=1", `STATUS=${oneLine(status)}`]);
}

/** Free-form status line shown by `systemctl status`. */
export function notifyStatus(status: string): Promise<NotifyResult> {
  return sdNotify([`STATUS=${oneLine(status)}`]);
}

/** Keep-alive for WatchdogSec= (the unit does not set one today). */
export function notifyWatchdog(): Promise<NotifyResult> {
  return sdNotify(["WATCHDOG=1"]);
}

/** The watchdog interval systemd asks for ($WATCHDOG_USEC, for this PID), in ms; 0 when none. */
export function watchdogIntervalMs(env: Record<string, string | undefined> = process.env): number {
  const usec = Number(env.WATCHDOG_USEC ?? 0);
  const pid = env.WATCHDOG_PID;
  if (!usec || (pid && Number(pid) !== process.pid)) return 0;
  return Math.floor(usec / 1000 / 2); // notify at half the interval, as sd_watchdog_enabled(3) advises
}
