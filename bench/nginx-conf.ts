/** The nginx configuration the live benchmarks run: one worker, keep-alive without limit, no access log,
 * no sendfile (with sendfile the agent cannot see file bodies: see bench/README.md), every temp path
 * inside `dir`; `servers` are the server blocks. The caller makes `dir/logs` and `dir/www`. */
export function benchNginxConf(dir: string, servers: string[]): string {
  return `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/logs/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile off;
  keepalive_requests 1000000;
  keepalive_timeout 65;
  types { application/json json; }
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
${servers.join("\n")}
}
`;
}
