// How long a JetStream pull request waits: it also sets how soon a reader notices that its nats-server is gone.

/**
 * `expires` of every `consume()` (pull consumers and the shard actor's ordered readers). The client asks for server
 * heartbeats every half of it and, after two missed, issues its pull again (or, for an ordered reader, recreates it) —
 * so after a nats-server's loss a reader moves again within about this long, rather than the client's default 30 s.
 * The cost is one pull request per idle reader every 5 s.
 */
export const PULL_EXPIRES_MS = 5000;
