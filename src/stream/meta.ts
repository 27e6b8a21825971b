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
}
