// A counting semaphore: bounds calls in flight to one provider app (the concurrency limit of its bulkhead), or JetStream consumer creations of one process.

/** Runs at most `limit` tasks at once; the rest wait in FIFO order per rank, lower ranks ahead of higher ones. */
export class Semaphore {
  private active = 0;
  /** Waiting tasks per rank. */
  private readonly waiting: (() => void)[][] = [];
  constructor(readonly limit: number) {}

  /** Runs `fn` when a slot is free (after every waiting task of a lower `rank`) and releases the slot when it settles, whatever the outcome. */
  async run<T>(fn: () => Promise<T>, rank = 0): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((r) => (this.waiting[rank] ??= []).push(r));
    else this.active++;
    try {
      return await fn();
    } finally {
      const next = this.waiting.find((q) => q?.length)?.shift();
      if (next) next();
      else this.active--;
    }
  }

  /** Tasks waiting for a slot. */
  get queued(): number {
    return this.waiting.reduce((a, q) => a + (q?.length ?? 0), 0);
  }

  /** Tasks running now. */
  get inFlight(): number {
    return this.active;
  }
}
