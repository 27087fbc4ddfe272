// A token bucket: at most `burst` at once, then `perSecond` a second. The
// clock is injected, so tests run it by hand.

export interface BucketClock {
  /** Milliseconds, monotonic. */
  now(): number;
  sleep(ms: number): Promise<void>;
}

const realClock: BucketClock = {
  now: () => performance.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

export class TokenBucket {
  private tokens: number;
  private at: number;

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly clock: BucketClock = realClock,
  ) {
    if (!(perSecond > 0) || !(burst >= 1)) throw new Error(`token bucket: ${perSecond}/s, burst ${burst}`);
    this.tokens = burst;
    this.at = clock.now();
  }

  /** Resolves once a token is taken (at once while the bucket holds one). */
  async take(): Promise<void> {
    for (;;) {
      const now = this.clock.now();
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) * this.perSecond) / 1000);
      this.at = now;
      if (this.tokens >= 1) {
        this.tokens -= 1;
        return;
      }
      await this.clock.sleep(((1 - this.tokens) * 1000) / this.perSecond);
    }
  }
}
