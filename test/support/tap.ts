/**
 * Runs a shell test that prints "ok - …" / "not ok - …" per check, "Bail out! …" when it
 * cannot go on, and "N passed, N failed" last (test/install/run.sh, release.sh), and parses
 * what it printed. Exit status 77 means the script skipped itself (the reason is on stderr).
 */
export interface TapRun {
  code: number;
  out: string;
  err: string;
  lines: string[];
  /** the "not ok" and "Bail out!" lines */
  failed: string[];
  /** the "N passed, N failed" line, or "(no summary line)" */
  summary: string;
  passed: number;
}

export async function runTapScript(cmd: string[], env: Record<string, string | undefined> = {}): Promise<TapRun> {
  const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe", env: { ...process.env, ...env } });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  const lines = out.split("\n");
  const failed = lines.filter((l) => l.startsWith("not ok") || l.startsWith("Bail out!"));
  const summary = lines.find((l) => /^\d+ passed, \d+ failed$/.test(l)) ?? "(no summary line)";
  if (code !== 77 && (failed.length || code !== 0)) console.log(out + err);
  return { code, out, err, lines, failed, summary, passed: Number(summary.split(" ")[0]) || 0 };
}
