// How long a JetStream pull request waits: it also sets how soon a reader notices that its nats-server is gone.

/**
 * `expires` of every `consume()` (pull consumers and the shard actor's ordered readers). The client asks for server
 * heartbeats every half of it and, after two missed, issues its pull again (or, for an ordered reader, recreates it) —
 * so after a nats-server's loss a reader moves again within about this long, rather than the client's default 30 s.
 * The cost is one pull request per idle reader every 5 s.
 */
export const PULL_EXPIRES_MS = 5000;

/** How often an idle ordered reader is checked for a stall (see {@link StallWatch}). */
export const STALL_CHECK_MS = PULL_EXPIRES_MS;

/**
 * Notices a reader that has stopped delivering although there is work for
 * it, on a nats-server cluster: an ordered reader's consumer lives on one
 * server (one replica, in memory), and while that server is down the client
 * only retries it, never creating the consumer elsewhere; after a JetStream
 * leader change a reader has also been seen to keep quiet without ending
 * (docs/operations.md, "On N machines"). Fed one observation every
 * {@link STALL_CHECK_MS}: stalled once two checks in a row found the reader
 * idle (nothing read since the check before, and room to read) while its
 * consumer either had messages pending or did not answer at all. One such
 * check alone is not enough: a message published a moment before it is
 * pending and not yet read.
 */
export class StallWatch {
  private suspect = false;

  /**
   * One check. `idle`: the reader read nothing since the last check and was
   * not held back by a full buffer. `pending`: messages its consumer holds
   * for it, `Infinity` when the consumer is gone, `undefined` when it did not
   * answer. True: stalled, open it again.
   */
  check(idle: boolean, pending: number | undefined): boolean {
    if (!idle || pending === 0) {
      this.suspect = false;
      return false;
    }
    if (this.suspect) {
      this.suspect = false;
      return true;
    }
    this.suspect = true;
    return false;
  }
}
