/**
 * Diagnoses "the server closed the connection before answering" on HTTPS. With TLS 1.3 a server
 * that refuses our client certificate (or demands one) does so after the client thinks the
 * handshake is done, and undici only reports UND_ERR_SOCKET "other side closed". This probe opens
 * one raw TLS connection with the same options and sends a tiny request: a TLS alert gives the
 * exact code (e.g. ERR_SSL_TLSV1_ALERT_CERTIFICATE_REQUIRED); a close without any byte after the
 * handshake is reported as TLS_CLOSED_AFTER_HANDSHAKE; an HTTP answer means it was not TLS.
 */
import * as tls from "node:tls";
import { isIP } from "node:net";
import type { Endpoint } from "./endpoint.ts";
import type { TlsMaterial } from "./settings.ts";
import { isTlsCode, type Failure } from "./failure.ts";

export function probeTls(ep: Endpoint, m: TlsMaterial, timeoutMs: number): Promise<Failure | undefined> {
  return new Promise((resolve) => {
    let handshake = false;
    let answered = false;
    let settled = false;
    const done = (f: Failure | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(f);
    };
    const sock = tls.connect({
      host: ep.hostname, port: ep.port, ca: m.ca, cert: m.cert, key: m.key,
      servername: isIP(ep.hostname) ? undefined : ep.hostname,
    });
    const timer = setTimeout(() => done(undefined), timeoutMs);
    sock.on("secureConnect", () => {
      handshake = true;
      sock.write(`POST ${ep.path} HTTP/1.1\r\nHost: ${ep.hostname}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    });
    sock.on("data", () => {
      answered = true;
      done(undefined);
    });
    sock.on("error", (e: NodeJS.ErrnoException) => {
      const code = e.code ?? "";
      done(isTlsCode(code) ? { kind: "tls", code, message: e.message } : undefined);
    });
    sock.on("close", () => {
      if (handshake && !answered) {
        const who = m.cert ? "our client certificate (agent_config.reporting.cert_file)" : "a connection without a client certificate (set agent_config.reporting.cert_file/key_file)";
        done({ kind: "tls", code: "TLS_CLOSED_AFTER_HANDSHAKE", message: `the server closed the TLS connection right after the handshake without answering: it most likely refused ${who}` });
      }
      done(undefined);
    });
  });
}
