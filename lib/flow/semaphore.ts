// A counting semaphore: bounds calls in flight to one provider app (the concurrency limit of its bulkhead).

/** Runs at most `limit` tasks at once; the rest wait in FIFO order. */
export class Semaphore {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(readonly limit: number) {}

  /** Runs `fn` when a slot is free and releases the slot when it settles, whatever the outcome. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((r) => this.waiting.push(r));
    else this.active++;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }

  /** Tasks waiting for a slot. */
  get queued(): number {
    return this.waiting.length;
  }

  /** Tasks running now. */
  get inFlight(): number {
    return this.active;
  }
}
