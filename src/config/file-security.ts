/**
 * Permission checks of the config file. The config may hold the agent token, exporter headers
 * and the admin bearer token, and it decides what is captured, so:
 * - refused (CONFIG error, before anything is used): a world-writable file, and, when the agent
 *   runs as root, a file not owned by root (another user could make root capture or send
 *   anything anywhere);
 * - warned (at start and by `check` / `config validate`): a file holding a token that is
 *   readable by its group or by others.
 * Only regular files are checked (a config given as /dev/stdin or a FIFO is the caller's call).
 */
import type { Stats } from "node:fs";
import { TracerError } from "../errors.ts";

export interface FileFacts {
  mode: number;
  uid: number;
  isFile: boolean;
}

export function factsOf(st: Stats): FileFacts {
  return { mode: st.mode, uid: st.uid, isFile: st.isFile() };
}

/** Throws TracerError CONFIG naming the file when it must not be used. */
export function refuseUnsafeConfigFile(path: string, f: FileFacts, euid: number = process.geteuid?.() ?? -1): void {
  if (!f.isFile) return;
  const mode = (f.mode & 0o777).toString(8).padStart(4, "0");
  if (f.mode & 0o002) {
    throw new TracerError("CONFIG", `${path}: refusing a world-writable config file (mode ${mode}): anyone could change what is captured and where it is sent; chmod o-w it`, { file: path });
  }
  if (euid === 0 && f.uid !== 0) {
    throw new TracerError("CONFIG", `${path}: refusing a config file owned by uid ${f.uid} while running as root: its owner could change what root captures and where it is sent; chown root it`, { file: path });
  }
}

/** Which secrets a config holds, by key (for the readable-by-others warning). */
export function secretKeys(cfg: { agent_config: { reporting: { agent_token: string; headers: Record<string, string> } }; admin: { bearer_token: string } }): string[] {
  const keys: string[] = [];
  if (cfg.agent_config.reporting.agent_token) keys.push("agent_config.reporting.agent_token");
  if (Object.keys(cfg.agent_config.reporting.headers).length) keys.push("agent_config.reporting.headers");
  if (cfg.admin.bearer_token) keys.push("admin.bearer_token");
  return keys;
}

/** Warnings for a config file that holds secrets and can be read by group or others. */
export function configFileWarnings(path: string, f: FileFacts, secrets: string[]): string[] {
  if (!f.isFile || secrets.length === 0 || !(f.mode & 0o044)) return [];
  const who = f.mode & 0o004 ? "everyone" : "its group";
  const mode = (f.mode & 0o777).toString(8).padStart(4, "0");
  return [`${path} holds ${secrets.join(", ")} and is readable by ${who} (mode ${mode}); chmod 600 it`];
}
