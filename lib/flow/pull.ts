// How long a JetStream pull request waits: it also sets how soon a reader notices that its nats-server is gone.

/**
 * `expires` of every `consume()` (pull consumers and the shard actor's ordered readers). The client asks for server
 * heartbeats every half of it and, after two missed, issues its pull again (or, for an ordered reader, recreates it) —
 * so after a nats-server's loss a reader moves again within about this long, rather than the client's default 30 s.
 * The cost is one pull request per idle reader every 5 s.
 */
export const PULL_EXPIRES_MS = 5000;

/**
 * Heartbeats in a row an ordered reader may miss (the server sends one every
 * half {@link PULL_EXPIRES_MS} while a pull waits) before it is opened again:
 * about 10 s in which its consumer sent nothing at all. An ordered reader's
 * consumer lives on one server (one replica, in memory); while that server
 * is down the client only asks it again and again, never creating the
 * consumer elsewhere, so a reader on a dead machine would wait for that
 * machine to come back (docs/operations.md, "On N machines").
 */
export const STALL_MISSED_HEARTBEATS = 4;
