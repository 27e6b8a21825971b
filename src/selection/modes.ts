/**
 * Small pieces of process selection shared by the selector and the pipeline: capture-mode bits
 * as the kernel stores them, and the classification of sockets that were open before capture.
 */
import { listeningPorts } from "./procfs.ts";
import { MODE_BOTH, MODE_EGRESS, MODE_INGRESS } from "../kernel/event-layout.ts";
import type { Mode } from "../config/schema.ts";

export function modeBits(m: Mode): number {
  return m === "ingress" ? MODE_INGRESS : m === "egress" ? MODE_EGRESS : MODE_BOTH;
}

export function modeName(bits: number): Mode | "excluded" {
  return bits === MODE_INGRESS ? "ingress" : bits === MODE_EGRESS ? "egress" : bits === MODE_BOTH ? "ingress_and_egress" : "excluded";
}

/**
 * Classifies a socket that was open before capture started: it is the server side when its
 * local port is a listening TCP port on this host. Listener lists are cached for a second.
 */
export class SocketClassifier {
  private ports = new Set<number>();
  private readAt = 0;
  constructor(private readonly procRoot = "/proc") {}
  isListeningPort(port: number): boolean {
    const now = Date.now();
    if (!this.ports.has(port) && now - this.readAt > 1000) {
      this.ports = new Set(listeningPorts(this.procRoot).map((l) => l.port));
      this.readAt = now;
    }
    return this.ports.has(port);
  }
}
