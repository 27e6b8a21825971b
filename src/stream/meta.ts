/** What is known of a connection's endpoints; shared by streams, protocols' span mapping and spans. */
export interface ConnectionMeta {
  id: number;
  tgid: number;
  fd: number;
  /** ROLE_SERVER: accepted (requests are received); ROLE_CLIENT: connected (requests are sent) */
  role: number;
  family: number;
  localAddr: string;
  localPort: number;
  remoteAddr: string;
  remotePort: number;
  comm: string;
  /** The application bytes are TLS plaintext (from uprobes on a TLS library). */
  tls?: boolean;
  /** Sampling ratio the connection was captured with (overhead budget, rate limits); 1 = all. */
  samplingRatio?: number;
  /** Which TLS library gave the plaintext ("openssl", "boringssl", "gnutls", "go"). */
  tlsLibrary?: string;
  /** How the TLS plaintext was joined to this connection: "exact" (a socket syscall inside the TLS
   * call, or the socket that SSL* last used), "inferred" (the thread's last socket: memory-BIO
   * stacks), "none" (no connection known: no peer addresses). Exact wins once seen. */
  tlsCorrelation?: "exact" | "inferred" | "none";
  /** Spans built on it so far (buildSpan: its attributes are shared from its second span on). */
  spans?: number;
}
