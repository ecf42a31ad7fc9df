/**
 * The access token in this tab's memory, and the generation counter the
 * origin's tabs share through localStorage (which never holds a token).
 *
 * @module tokenstile/token-store
 */

const GENERATION_KEY = 'tokenstile:generation';

/**
 * One tab's access token, its remaining lifetime on the monotonic
 * `performance.now()` clock, and the generation it belongs to.
 */
export class TokenStore {
  #access = null;
  #expiresAt = 0; // performance.now() ms
  #lifetime = 0; // ms
  #generation = 0;
  #installWaiters = new Set();

  /** @returns {string | null} the access token, or `null` */
  get accessToken() {
    return this.#access;
  }

  /** @returns {number} seconds until the access token expires (0 without one) */
  get expiresIn() {
    if (!this.#access) return 0;
    return Math.max(0, (this.#expiresAt - performance.now()) / 1000);
  }

  /** @returns {boolean} whether a token is held that has not expired yet */
  get live() {
    return this.#access !== null && this.expiresIn > 0;
  }

  /** @returns {number} `performance.now()` ms at which the token expires (0 without one) */
  get expiresAt() {
    return this.#expiresAt;
  }

  /** @returns {number} lifetime in ms of the token, as the server gave it (0 without one) */
  get lifetimeMs() {
    return this.#lifetime;
  }

  /** @returns {number} the generation of the token held, or of the last logout seen */
  get generation() {
    return this.#generation;
  }

  /** @returns {string | null} the `sid` claim of the token, or `null` */
  get sessionId() {
    return this.#access ? (decodeClaims(this.#access)?.sid ?? null) : null;
  }

  /**
   * Hold `token`, and wake everyone in `whenInstalled`.
   * @param {string} token
   * @param {number} remainingMs time left before it expires
   * @param {number} lifetimeMs its whole lifetime
   * @param {number} generation
   */
  install(token, remainingMs, lifetimeMs, generation) {
    this.#access = token;
    this.#lifetime = lifetimeMs;
    this.#expiresAt = performance.now() + remainingMs;
    this.#generation = generation;
    for (const resolve of this.#installWaiters) resolve();
    this.#installWaiters.clear();
  }

  /** Drop the token itself, keeping what is known of its times (for `close()`). */
  dropToken() {
    this.#access = null;
  }

  /** Forget the token; the generation stays. */
  clear() {
    this.#access = null;
    this.#expiresAt = 0;
    this.#lifetime = 0;
  }

  /**
   * Take the next generation of the origin (above this tab's and the shared one)
   * and publish it to the other tabs' storage.
   * @returns {number} the new generation, now this store's
   */
  advanceGeneration() {
    this.#generation = Math.max(this.#generation, readSharedGeneration()) + 1;
    writeSharedGeneration(this.#generation);
    return this.#generation;
  }

  /**
   * Raise the generation to at least `generation` (a peer's logout), so older
   * token messages are ignored.
   * @param {number} generation
   */
  raiseGeneration(generation) {
    this.#generation = Math.max(this.#generation, generation);
  }

  /**
   * Wait for the next `install`, at most `ms`.
   * @param {number} ms
   * @returns {Promise<void>} resolved on install or timeout, never rejected
   */
  whenInstalled(ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#installWaiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#installWaiters.add(done);
    });
  }
}

/**
 * The generation last published by any tab of this origin.
 * @returns {number} 0 when nothing was published or storage is unavailable
 */
export function readSharedGeneration() {
  try {
    return Number.parseInt(localStorage.getItem(GENERATION_KEY) ?? '0', 10) || 0;
  } catch {
    return 0;
  }
}

function writeSharedGeneration(generation) {
  try {
    localStorage.setItem(GENERATION_KEY, String(generation));
  } catch {
    // Without storage, the BroadcastChannel messages still carry the generation.
  }
}

function decodeClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part.padEnd(Math.ceil(part.length / 4) * 4, '=')));
  } catch {
    return null;
  }
}
