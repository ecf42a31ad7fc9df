/**
 * One refresh at a time across the tabs of an origin: the Web Lock
 * `tokenstile-refresh`, or, without Web Locks, a self-expiring lease in
 * localStorage announced over the tab channel.
 *
 * @module tokenstile/tab-lock
 */

const REFRESH_LOCK = 'tokenstile-refresh';
const LEASE_KEY = 'tokenstile:refresh-lease';
const LEASE_SETTLE_MS = 50;

/** Runs tasks exclusively across this origin's tabs, as well as the browser allows. */
export class TabLock {
  #mode;
  #channel;
  #requestTimeout;
  #lockTimeout;
  #tabId = randomId();
  #holdsLease = false;
  #releaseWaiters = new Set();

  /**
   * @param {object} options
   * @param {import('./tab-channel.js').TabChannel | null} options.channel where lease
   *   releases are announced (`{type: 'released'}`)
   * @param {number} options.requestTimeout ms a refresh request may take; a lease lasts 5 s longer
   * @param {number} options.lockTimeout ms to wait for another tab before taking over
   */
  constructor({ channel, requestTimeout, lockTimeout }) {
    this.#channel = channel;
    this.#requestTimeout = requestTimeout;
    this.#lockTimeout = lockTimeout;
    if (globalThis.navigator?.locks?.request) {
      this.#mode = 'web-locks';
    } else if (channel && storageWorks()) {
      this.#mode = 'broadcast-lease';
    } else {
      this.#mode = 'none'; // the server's grace window is all that is left
    }
  }

  /** @returns {'web-locks' | 'broadcast-lease' | 'none'} how tabs are kept apart */
  get mode() {
    return this.#mode;
  }

  /**
   * Run `task` while no other tab runs one.
   * @template T
   * @param {() => Promise<T>} task
   * @returns {Promise<T>} what `task` returned
   */
  run(task) {
    if (this.#mode === 'web-locks') return this.#withWebLock(task);
    if (this.#mode === 'broadcast-lease') return this.#withLease(task);
    return task();
  }

  /** Give up the lease if this tab holds it, and tell the waiting tabs. */
  release() {
    if (!this.#holdsLease) return;
    this.#holdsLease = false;
    if (readLease()?.owner === this.#tabId) {
      try {
        localStorage.removeItem(LEASE_KEY);
      } catch {
        // Storage went away; the lease expires by itself.
      }
    }
    this.#channel?.post({ type: 'released' });
  }

  /** Another tab released its lease: stop waiting and try now. */
  onReleased() {
    for (const resolve of this.#releaseWaiters) resolve();
    this.#releaseWaiters.clear();
  }

  async #withWebLock(task) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.#lockTimeout);
    try {
      return await navigator.locks.request(REFRESH_LOCK, { signal: controller.signal }, () => {
        clearTimeout(timer);
        return task();
      });
    } catch (error) {
      if (!controller.signal.aborted) throw error;
      // The holder is alive but stuck (a dead tab's lock the browser releases by
      // itself): take the lock over rather than wait forever.
      return navigator.locks.request(REFRESH_LOCK, { steal: true }, task);
    } finally {
      clearTimeout(timer);
    }
  }

  async #withLease(task) {
    await this.#acquireLease();
    try {
      return await task();
    } finally {
      this.release();
    }
  }

  async #acquireLease() {
    // A lease rather than a lock: it expires, so a tab that died holding it
    // cannot block the others for longer than the lease.
    const leaseMs = this.#requestTimeout + 5000;
    const deadline = Date.now() + this.#lockTimeout;
    for (;;) {
      const now = Date.now();
      const lease = readLease();
      if (!lease || lease.until <= now || lease.owner === this.#tabId || now >= deadline) {
        writeLease({ owner: this.#tabId, until: now + leaseMs });
        // Two tabs may write at once; the value that stays is the winner's.
        await sleep(LEASE_SETTLE_MS);
        if (readLease()?.owner === this.#tabId) {
          this.#holdsLease = true;
          return;
        }
        continue;
      }
      await this.#awaitRelease(Math.min(250, lease.until - now));
    }
  }

  #awaitRelease(ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#releaseWaiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#releaseWaiters.add(done);
    });
  }
}

function readLease() {
  try {
    const lease = JSON.parse(localStorage.getItem(LEASE_KEY) ?? 'null');
    return lease && typeof lease.owner === 'string' ? lease : null;
  } catch {
    return null;
  }
}

function writeLease(lease) {
  localStorage.setItem(LEASE_KEY, JSON.stringify(lease));
}

function storageWorks() {
  try {
    localStorage.setItem(`${LEASE_KEY}:probe`, '1');
    localStorage.removeItem(`${LEASE_KEY}:probe`);
    return true;
  } catch {
    return false;
  }
}

function randomId() {
  return globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random()}`;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
