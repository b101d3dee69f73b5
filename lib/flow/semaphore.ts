// A counting semaphore: bounds calls in flight to one provider app (the concurrency limit of its bulkhead), or JetStream consumer creations of one process.

/** A task waiting for its slots. */
interface Waiter {
  weight: number;
  go: () => void;
}

/**
 * Runs tasks while their weights in flight stay within `limit` (a task weighs 1
 * unless told otherwise; one heavier than `limit` runs alone). The rest wait
 * in FIFO order per rank, lower ranks ahead of higher ones; a waiting task is
 * never overtaken by a lighter one behind it.
 */
export class Semaphore {
  private active = 0;
  private waitingWeight = 0;
  /** Waiting tasks per rank. */
  private readonly waiting: Waiter[][] = [];
  constructor(readonly limit: number) {}

  /**
   * Runs `fn` when `weight` slots are free (after every waiting task of a lower `rank`, and those of its rank
   * before it) and releases them when it settles, whatever the outcome.
   */
  async run<T>(fn: () => Promise<T>, rank = 0, weight = 1): Promise<T> {
    if (this.waitingWeight === 0 && this.fits(weight)) this.active += weight;
    else {
      this.waitingWeight += weight;
      await new Promise<void>((go) => (this.waiting[rank] ??= []).push({ weight, go }));
    }
    try {
      return await fn();
    } finally {
      this.active -= weight;
      this.admit();
    }
  }

  /** Whether `weight` more slots fit now (a task heavier than the limit fits only when nothing runs). */
  private fits(weight: number): boolean {
    return this.active === 0 || this.active + weight <= this.limit;
  }

  /** Starts waiting tasks, lowest rank first, for as long as the next one fits. */
  private admit(): void {
    for (const q of this.waiting) {
      while (q?.length) {
        if (!this.fits(q[0].weight)) return;
        const w = q.shift()!;
        this.active += w.weight;
        this.waitingWeight -= w.weight;
        w.go();
      }
    }
  }

  /** Slots (task weights) waiting. */
  get queued(): number {
    return this.waitingWeight;
  }

  /** Slots (task weights) in flight. */
  get inFlight(): number {
    return this.active;
  }
}
