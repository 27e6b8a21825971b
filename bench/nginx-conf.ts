import { nginxConf } from "../test/support/servers.ts";

/** The nginx configuration the live benchmarks run: one worker, keep-alive without limit, no
 * sendfile (with sendfile the agent cannot see file bodies: see bench/README.md); `servers` are
 * the server blocks. The caller makes `dir/logs` and `dir/www`. */
export function benchNginxConf(dir: string, servers: string[]): string {
  return nginxConf(dir, [
    "sendfile off;",
    "keepalive_requests 1000000;",
    "keepalive_timeout 65;",
    "types { application/json json; }",
    ...servers,
  ], { connections: 4096 });
}
