/**
 * When to refresh: before expiry, timed from the server's `expires_in` on the
 * monotonic clock, and again with bounded backoff after a failure.
 *
 * @module tokenstile/refresh-scheduler
 */

const MAX_BACKOFF_MS = 30_000;

/**
 * @typedef {object} RetryPlan
 * @property {number} attempt the failed attempt's number (1-based)
 * @property {number | null} retryIn seconds until the next attempt, `null` when `final`
 * @property {boolean} final whether no further attempt is scheduled
 */

/** One timer that calls `onDue` when the token of a `TokenStore` should be refreshed. */
export class RefreshScheduler {
  #ratio;
  #marginMs;
  #maxRetries;
  #onDue;
  #timer = null;
  #attempt = 0;

  /**
   * @param {object} options
   * @param {number} options.refreshRatio refresh after this share of the lifetime
   * @param {number} options.refreshMarginMs ...or this many ms before expiry, whichever is later
   * @param {number} options.maxRetries attempts after failures before giving up
   * @param {() => void} options.onDue called when a refresh is due
   */
  constructor({ refreshRatio, refreshMarginMs, maxRetries, onDue }) {
    this.#ratio = refreshRatio;
    this.#marginMs = refreshMarginMs;
    this.#maxRetries = maxRetries;
    this.#onDue = onDue;
  }

  /** @returns {number} failed attempts since the last success (0 after one) */
  get attempt() {
    return this.#attempt;
  }

  /**
   * @param {import('./token-store.js').TokenStore} tokens
   * @returns {boolean} whether a token is held whose refresh time has come
   */
  isDue(tokens) {
    return tokens.accessToken !== null && performance.now() >= this.#dueAt(tokens);
  }

  /**
   * Set the timer for the refresh of the token held (none without one).
   * @param {import('./token-store.js').TokenStore} tokens
   */
  schedule(tokens) {
    clearTimeout(this.#timer);
    if (!tokens.accessToken) return;
    // A little jitter keeps tabs that adopted the same token from waking together.
    const jitter = Math.random() * 0.05 * tokens.lifetimeMs;
    const delay = Math.max(0, this.#dueAt(tokens) - jitter - performance.now());
    this.#timer = setTimeout(this.#onDue, delay);
  }

  /**
   * Count a failed attempt and set the timer for the next one, with exponential
   * backoff (1–30 s, jittered) but no sooner than `retryAfter`.
   * @param {number | null} retryAfter seconds the server asked to wait
   * @returns {RetryPlan} what was scheduled
   */
  retryLater(retryAfter) {
    this.#attempt += 1;
    if (this.#attempt > this.#maxRetries) {
      // Give up scheduling; the next request that meets a 401 tries once more.
      this.#attempt = 0;
      return { attempt: this.#maxRetries, retryIn: null, final: true };
    }
    const backoff = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (this.#attempt - 1));
    const wait = Math.max(backoff * (0.75 + Math.random() * 0.5), (retryAfter ?? 0) * 1000);
    clearTimeout(this.#timer);
    this.#timer = setTimeout(this.#onDue, wait);
    return { attempt: this.#attempt, retryIn: wait / 1000, final: false };
  }

  /** Forget past failures (a refresh or login succeeded). */
  succeeded() {
    this.#attempt = 0;
  }

  /** Cancel the timer and forget past failures. */
  stop() {
    clearTimeout(this.#timer);
    this.#attempt = 0;
  }

  /** Cancel the timer. */
  cancel() {
    clearTimeout(this.#timer);
  }

  #dueAt(tokens) {
    const lifetime = tokens.lifetimeMs;
    const wait = Math.max(lifetime * this.#ratio, lifetime - this.#marginMs);
    return tokens.expiresAt - lifetime + wait;
  }
}
