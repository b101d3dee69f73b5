// How long a JetStream pull request waits: it also sets how soon a reader notices that its nats-server is gone.

/**
 * `expires` of every `consume()` (pull consumers and the shard actor's ordered readers). The client asks for server
 * heartbeats every half of it and, after two missed, issues its pull again (or, for an ordered reader, recreates it) —
 * so after a nats-server's loss a reader moves again within about this long, rather than the client's default 30 s.
 * The cost is one pull request per idle reader every 5 s.
 */
export const PULL_EXPIRES_MS = 5000;

/** How often an idle ordered reader is checked for a stall (see {@link StallWatch}). */
export const STALL_CHECK_MS = 2 * PULL_EXPIRES_MS;

/**
 * Notices a reader that has stopped delivering although its consumer has
 * messages for it: seen on a nats-server cluster after a JetStream leader
 * change, where an ordered reader keeps its heartbeats but never delivers
 * again and never ends (docs/operations.md, "On N machines"). Fed one
 * observation every {@link STALL_CHECK_MS}: stalled once two checks in a row
 * found the reader idle (nothing read since the check before, and room to
 * read) while the server counted messages pending for it. One such check
 * alone is not enough: a message published a moment before it is pending
 * and not yet read.
 */
export class StallWatch {
  private suspect = false;

  /**
   * One check. `idle`: the reader read nothing since the last check and was
   * not held back by a full buffer. `pending`: messages the server holds for
   * the reader's consumer (`Infinity` when the consumer is gone, `undefined`
   * when the server could not be asked). True: stalled, open it again.
   */
  check(idle: boolean, pending: number | undefined): boolean {
    if (!idle || pending === 0) {
      this.suspect = false;
      return false;
    }
    if (pending === undefined) return false;
    if (this.suspect) {
      this.suspect = false;
      return true;
    }
    this.suspect = true;
    return false;
  }
}
