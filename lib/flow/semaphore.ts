// A counting semaphore: bounds calls in flight to one provider app (the concurrency limit of its bulkhead), or JetStream consumer creations of one process.

/** Runs at most `limit` tasks at once; the rest wait in FIFO order, tasks run `first` ahead of the others. */
export class Semaphore {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  private readonly waitingFirst: (() => void)[] = [];
  constructor(readonly limit: number) {}

  /** Runs `fn` when a slot is free (before every waiting task not `first`) and releases the slot when it settles, whatever the outcome. */
  async run<T>(fn: () => Promise<T>, first = false): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((r) => (first ? this.waitingFirst : this.waiting).push(r));
    else this.active++;
    try {
      return await fn();
    } finally {
      const next = this.waitingFirst.shift() ?? this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }

  /** Tasks waiting for a slot. */
  get queued(): number {
    return this.waiting.length + this.waitingFirst.length;
  }

  /** Tasks running now. */
  get inFlight(): number {
    return this.active;
  }
}
