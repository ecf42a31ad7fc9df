/**
 * tokenstile browser client: a dependency-free ES module.
 *
 * The access token lives in this object's memory only, never in localStorage,
 * sessionStorage or a readable cookie. The refresh token lives in the HttpOnly
 * `tokenstile_refresh` cookie that the server sets for the cookie transport
 * (`X-Token-Transport: cookie`), so scripts never see it.
 *
 * - Silent refresh before expiry, timed from the server's `expires_in` on the
 *   monotonic `performance.now()` clock, never the device clock against `exp`.
 * - One refresh in flight per tab (single-flight) and one per browser: tabs take
 *   the Web Lock `tokenstile-refresh` (or, without Web Locks, a lease in
 *   localStorage announced over BroadcastChannel). The lock holder first checks
 *   whether another tab already refreshed and adopts its token instead.
 * - New access tokens are shared with same-origin tabs over the BroadcastChannel
 *   `tokenstile`. localStorage only ever holds a generation counter and a lease.
 * - A rejected refresh (401) ends the session everywhere and emits `loggedout`;
 *   a 503 or network error keeps the state and retries with bounded backoff.
 *
 * @example
 * import { TokenstileClient } from '/static/tokenstile.js';
 * const auth = new TokenstileClient();
 * auth.addEventListener('loggedout', (event) => showLogin(event.detail.reason));
 * if (!(await auth.restore())) await auth.login('alice', 'correct horse battery');
 * const response = await auth.fetch('/api/items');
 *
 * @module tokenstile
 */

const REFRESH_LOCK = 'tokenstile-refresh';
const CHANNEL_NAME = 'tokenstile';
const GENERATION_KEY = 'tokenstile:generation';
const LEASE_KEY = 'tokenstile:refresh-lease';
const CSRF_COOKIE = 'tokenstile_csrf';
const LEASE_SETTLE_MS = 50;
const PEER_REPLY_MS = 150;
const ADOPTION_WAIT_MS = 1000;
const MAX_BACKOFF_MS = 30_000;

/**
 * An error answered by the server (`{"error": code, "detail": sentence}`) or a
 * network failure (`code` `network_error`, `status` 0).
 */
export class TokenstileError extends Error {
  /**
   * @param {string} code stable machine-readable code, e.g. `invalid_credentials`
   * @param {string} detail human sentence, in the language the browser prefers
   * @param {{status?: number, retryAfter?: number | null}} [info]
   */
  constructor(code, detail, { status = 0, retryAfter = null } = {}) {
    super(detail);
    this.name = 'TokenstileError';
    /** @type {string} */
    this.code = code;
    /** @type {string} */
    this.detail = detail;
    /** @type {number} HTTP status, 0 when the server was not reached */
    this.status = status;
    /** @type {number | null} seconds from `Retry-After`, if the server sent it */
    this.retryAfter = retryAfter;
  }

  /**
   * The error a failed response describes.
   * @param {Response} response
   * @returns {Promise<TokenstileError>}
   */
  static async fromResponse(response) {
    let body = {};
    try {
      body = await response.json();
    } catch {
      // Not JSON (a proxy's error page): the status says enough.
    }
    const retryAfter = Number.parseInt(response.headers.get('Retry-After') ?? '', 10);
    return new TokenstileError(
      typeof body.error === 'string' ? body.error : `http_${response.status}`,
      typeof body.detail === 'string' ? body.detail : response.statusText || 'Request failed.',
      { status: response.status, retryAfter: Number.isFinite(retryAfter) ? retryAfter : null },
    );
  }
}

/**
 * @typedef {object} ClientOptions
 * @property {string} [baseUrl] where tokenstile answers; default: this page's origin
 * @property {number} [refreshRatio] refresh after this share of the lifetime (0.8)
 * @property {number} [refreshMargin] ...or this many seconds before expiry, whichever is later (60)
 * @property {number} [requestTimeout] ms before a refresh request is abandoned (15000)
 * @property {number} [lockTimeout] ms to wait for another tab's refresh before taking over (20000)
 * @property {number} [maxRetries] refresh attempts after 503/network errors before giving up (6)
 */

/**
 * @typedef {object} Session
 * @property {string} id the session id (the `sid` claim of its tokens)
 * @property {string} created_at ISO 8601
 * @property {string} last_used_at ISO 8601
 * @property {string} expires_at ISO 8601
 * @property {string | null} user_agent
 * @property {string | null} ip
 * @property {boolean} current whether it is the session of this client's token
 */

/**
 * The tokenstile client for one tab.
 *
 * Events (all `CustomEvent`s; read `event.detail`):
 * - `tokens` `{source, generation, expiresIn}`: a new access token is in use;
 *   `source` is `login`, `refresh` (this tab refreshed) or `peer` (adopted from
 *   another tab).
 * - `refresh` `{source: 'self' | 'peer', at: Date, expiresIn, generation}`: a silent
 *   refresh succeeded, here or in another tab.
 * - `loggedout` `{reason}`: the tokens are gone. `reason` is `logout`,
 *   `logout_all`, `session_ended`, `no_session`, or the server's error code
 *   (`token_reused`, `token_revoked`, `token_expired`, `invalid_token`).
 * - `error` `{error: TokenstileError, attempt, retryIn, final}`: a refresh failed
 *   for a reason other than the token; the state is kept. `retryIn` is seconds
 *   until the next attempt, `null` when `final`.
 */
export class TokenstileClient extends EventTarget {
  #baseUrl;
  #origin;
  #credentials;
  #refreshRatio;
  #refreshMargin;
  #requestTimeout;
  #lockTimeout;
  #maxRetries;
  #coordination;
  #channel = null;
  #tabId = randomId();

  #access = null;
  #expiresAt = 0; // performance.now() ms
  #lifetime = 0; // ms
  #generation = 0;
  #refreshing = null;
  #timer = null;
  #attempt = 0;
  #adoptionWaiters = new Set();
  #releaseWaiters = new Set();
  #holdsLease = false;
  #listeners = [];

  /** @param {ClientOptions} [options] */
  constructor({
    baseUrl = '',
    refreshRatio = 0.8,
    refreshMargin = 60,
    requestTimeout = 15_000,
    lockTimeout = 20_000,
    maxRetries = 6,
  } = {}) {
    super();
    this.#baseUrl = baseUrl.replace(/\/+$/, '');
    this.#origin = new URL(this.#baseUrl || '/', globalThis.location?.href).origin;
    // Cookies go to tokenstile on another origin only if asked for (and CORS allows it).
    this.#credentials = this.#origin === globalThis.location?.origin ? 'same-origin' : 'include';
    this.#refreshRatio = refreshRatio;
    this.#refreshMargin = refreshMargin * 1000;
    this.#requestTimeout = requestTimeout;
    this.#lockTimeout = lockTimeout;
    this.#maxRetries = maxRetries;

    if (typeof BroadcastChannel === 'function') {
      this.#channel = new BroadcastChannel(CHANNEL_NAME);
      this.#channel.onmessage = (event) => this.#onMessage(event.data);
    }
    if (globalThis.navigator?.locks?.request) {
      this.#coordination = 'web-locks';
    } else if (this.#channel && storageWorks()) {
      this.#coordination = 'broadcast-lease';
    } else {
      this.#coordination = 'none'; // the server's grace window is all that is left
    }

    this.#listen(globalThis.document, 'visibilitychange', () => {
      if (document.visibilityState === 'visible') this.#refreshIfDue();
    });
    this.#listen(globalThis, 'online', () => this.#refreshIfDue());
    this.#listen(globalThis, 'pagehide', () => this.#releaseLease());
  }

  /** The current access token, or `null`. Held in memory only. */
  get accessToken() {
    return this.#access;
  }

  /** Seconds until the access token expires (0 without one), by `performance.now()`. */
  get expiresIn() {
    if (!this.#access) return 0;
    return Math.max(0, (this.#expiresAt - performance.now()) / 1000);
  }

  /** Lifetime in seconds of the current access token, as the server gave it. */
  get lifetime() {
    return this.#lifetime / 1000;
  }

  /** Whether an access token is held (it may have expired; see `expiresIn`). */
  get signedIn() {
    return this.#access !== null;
  }

  /** The session id (`sid` claim) of the current access token, or `null`. */
  get sessionId() {
    return this.#access ? (decodeClaims(this.#access)?.sid ?? null) : null;
  }

  /** Counter of token changes shared by this origin's tabs; rises on every refresh. */
  get generation() {
    return this.#generation;
  }

  /** How tabs coordinate refreshes: `web-locks`, `broadcast-lease` or `none`. */
  get coordination() {
    return this.#coordination;
  }

  /**
   * Sign in with the cookie transport. The refresh token arrives only as an
   * HttpOnly cookie; the access token is kept in memory and shared with other tabs.
   * @param {string} username
   * @param {string} password
   * @param {{rememberMe?: boolean}} [options] `rememberMe`: a cookie that outlives the browser
   * @returns {Promise<void>}
   * @throws {TokenstileError} `invalid_credentials`, `rate_limited`, `network_error`, ...
   */
  async login(username, password, { rememberMe = false } = {}) {
    const response = await this.#post('/auth/login', {
      headers: { 'Content-Type': 'application/json', 'X-Token-Transport': 'cookie' },
      body: JSON.stringify({ username, password, remember_me: rememberMe }),
    });
    if (!response.ok) throw await TokenstileError.fromResponse(response);
    this.#attempt = 0;
    this.#accept(await response.json(), 'login');
  }

  /**
   * Create an account (`POST /auth/register`); does not sign in.
   * @param {string} username
   * @param {string} password
   * @returns {Promise<{id: string, username: string}>}
   * @throws {TokenstileError} `username_taken`, `weak_password`, `registration_closed`, ...
   */
  async register(username, password) {
    const response = await this.#post('/auth/register', {
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username, password }),
    });
    if (!response.ok) throw await TokenstileError.fromResponse(response);
    return response.json();
  }

  /**
   * Recover the session after a page load: adopt a token from another open tab,
   * or else refresh silently with the cookie. Makes no request without a CSRF cookie.
   * @returns {Promise<boolean>} whether this client is signed in afterwards
   * @throws {TokenstileError} on a 503 or network error (a retry is scheduled)
   */
  async restore() {
    if (this.#access && this.expiresIn > 0) return true;
    if (!readCookie(CSRF_COOKIE)) return false;
    if (this.#channel) {
      this.#broadcast({ type: 'hello' });
      await this.#awaitAdoption(PEER_REPLY_MS);
      if (this.#access && this.expiresIn > 0) return true;
    }
    return (await this.refresh()) !== null;
  }

  /**
   * Refresh now. Concurrent calls share one request, and tabs take turns.
   * @returns {Promise<string | null>} the new access token, `null` when the session is over
   * @throws {TokenstileError} on a 503, network or CSRF error (state kept)
   */
  refresh() {
    if (!this.#refreshing) {
      const known = { local: this.#generation, shared: readGeneration() };
      this.#refreshing = this.#refreshAcrossTabs(known).finally(() => {
        this.#refreshing = null;
      });
    }
    return this.#refreshing;
  }

  /**
   * `fetch` with `Authorization: Bearer <access token>` for this client's origin.
   * Refreshes first when the token has run out, and once more on a 401, retrying
   * the request once. Other origins never see the token.
   * @param {RequestInfo | URL} input
   * @param {RequestInit} [init]
   * @returns {Promise<Response>}
   */
  async fetch(input, init = {}) {
    const request = new Request(input, init);
    if (new URL(request.url).origin !== this.#origin) return fetch(request);
    if (this.#access && this.expiresIn <= 0) await this.refresh().catch(() => null);
    const token = this.#access;
    const response = await fetch(withBearer(request.clone(), token));
    if (response.status !== 401 || !token) return response;
    if (this.#access === token) await this.refresh().catch(() => null);
    if (!this.#access || this.#access === token) return response;
    return fetch(withBearer(request, this.#access));
  }

  /**
   * The signed-in user (`GET /users/me`).
   * @returns {Promise<{id: string, username: string}>}
   * @throws {TokenstileError}
   */
  async me() {
    return this.#json(await this.fetch(this.#url('/users/me')));
  }

  /**
   * The user's live sessions (`GET /auth/sessions`).
   * @returns {Promise<Session[]>}
   * @throws {TokenstileError}
   */
  async sessions() {
    return this.#json(await this.fetch(this.#url('/auth/sessions')));
  }

  /**
   * End one of the user's sessions (`DELETE /auth/sessions/{id}`). Ending this
   * client's own session signs it out (`loggedout` with `session_ended`).
   * @param {string} id
   * @returns {Promise<void>}
   * @throws {TokenstileError}
   */
  async endSession(id) {
    const own = id === this.sessionId;
    const path = `/auth/sessions/${encodeURIComponent(id)}`;
    const response = await this.fetch(this.#url(path), { method: 'DELETE' });
    if (!response.ok) throw await TokenstileError.fromResponse(response);
    if (own) {
      await this.#cookieLogout(null).catch(() => null); // only to clear the dead cookies
      this.#end('session_ended', { broadcast: true });
    }
  }

  /**
   * End this session (`POST /auth/logout` with the bearer token and the cookie);
   * the server clears the cookies. Every tab of this origin is signed out.
   * @returns {Promise<void>}
   * @throws {TokenstileError} when the server could not be reached (still signed in)
   */
  async logout() {
    await this.#refreshing?.catch(() => null);
    const bearer = this.expiresIn > 0 ? this.#access : null;
    let response = await this.#cookieLogout(bearer);
    if (response?.status === 401 && bearer) response = await this.#cookieLogout(null);
    if (response && !response.ok && response.status !== 401) {
      throw await TokenstileError.fromResponse(response);
    }
    this.#end('logout', { broadcast: true, always: true });
  }

  /**
   * End every session of the user on every device (`POST /auth/logout-all`), then
   * clear this browser's cookies.
   * @returns {Promise<void>}
   * @throws {TokenstileError} when the server refused or could not be reached
   */
  async logoutAll() {
    const response = await this.fetch(this.#url('/auth/logout-all'), { method: 'POST' });
    if (!response.ok && response.status !== 401) {
      throw await TokenstileError.fromResponse(response);
    }
    // The session is over already; this only makes the server clear the cookies.
    await this.#cookieLogout(null).catch(() => null);
    this.#end('logout_all', { broadcast: true, always: true });
  }

  /** Stop timers and listeners and close the channel; the tokens are forgotten. */
  close() {
    clearTimeout(this.#timer);
    this.#releaseLease();
    for (const [target, type, listener] of this.#listeners) {
      target.removeEventListener(type, listener);
    }
    this.#listeners = [];
    this.#channel?.close();
    this.#channel = null;
    this.#access = null;
  }

  // --- refreshing ---------------------------------------------------------

  async #refreshAcrossTabs(known) {
    return this.#exclusive(async () => {
      if (this.#adoptedSince(known)) return this.#access;
      // Another tab refreshed while we waited; its broadcast may still be on the way.
      if (readGeneration() > known.shared) {
        await this.#awaitAdoption(ADOPTION_WAIT_MS);
        if (this.#adoptedSince(known)) return this.#access;
      }
      return this.#refreshWithCookie();
    });
  }

  #adoptedSince(known) {
    return this.#generation !== known.local && this.#access !== null && this.expiresIn > 0;
  }

  async #refreshWithCookie() {
    const csrf = readCookie(CSRF_COOKIE);
    if (!csrf) {
      this.#end('no_session', {});
      return null;
    }
    let response;
    try {
      response = await fetch(this.#url('/auth/refresh'), {
        method: 'POST',
        credentials: this.#credentials,
        cache: 'no-store',
        headers: { 'X-Token-Transport': 'cookie', 'X-CSRF-Token': csrf, Accept: 'application/json' },
        signal: AbortSignal.timeout(this.#requestTimeout),
      });
    } catch (cause) {
      throw this.#retryLater(new TokenstileError('network_error', String(cause?.message ?? cause)));
    }
    if (response.ok) {
      this.#attempt = 0;
      this.#accept(await response.json(), 'refresh');
      return this.#access;
    }
    const error = await TokenstileError.fromResponse(response);
    if (response.status === 401) {
      // The server rejected the refresh token for good: the session is over in every tab.
      this.#end(error.code, { broadcast: true });
      return null;
    }
    if (error.code === 'invalid_request') {
      // No refresh cookie (cleared, or a session cookie that ended with the browser).
      this.#end('no_session', {});
      return null;
    }
    if (response.status === 429 || response.status >= 500) throw this.#retryLater(error);
    // csrf_failed and the like: retrying cannot help, and looping would hide it.
    this.#emit('error', { error, attempt: this.#attempt, retryIn: null, final: true });
    throw error;
  }

  #retryLater(error) {
    this.#attempt += 1;
    if (this.#attempt > this.#maxRetries) {
      // Give up scheduling; the next request that meets a 401 tries once more.
      this.#attempt = 0;
      this.#emit('error', { error, attempt: this.#maxRetries, retryIn: null, final: true });
      return error;
    }
    const backoff = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (this.#attempt - 1));
    const wait = Math.max(backoff * (0.75 + Math.random() * 0.5), (error.retryAfter ?? 0) * 1000);
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.refresh().catch(() => null), wait);
    this.#emit('error', { error, attempt: this.#attempt, retryIn: wait / 1000, final: false });
    return error;
  }

  #refreshIfDue() {
    if (this.#access && performance.now() >= this.#refreshAt()) {
      this.refresh().catch(() => null);
    }
  }

  #refreshAt() {
    const wait = Math.max(this.#lifetime * this.#refreshRatio, this.#lifetime - this.#refreshMargin);
    return this.#expiresAt - this.#lifetime + wait;
  }

  #schedule() {
    clearTimeout(this.#timer);
    if (!this.#access) return;
    // A little jitter keeps tabs that adopted the same token from waking together.
    const jitter = Math.random() * 0.05 * this.#lifetime;
    const delay = Math.max(0, this.#refreshAt() - jitter - performance.now());
    this.#timer = setTimeout(() => this.refresh().catch(() => null), delay);
  }

  // --- token state --------------------------------------------------------

  #accept(body, source) {
    const generation = Math.max(this.#generation, readGeneration()) + 1;
    writeGeneration(generation);
    this.#install(body.access_token, body.expires_in * 1000, body.expires_in * 1000, generation);
    this.#share(source);
    this.#emit('tokens', { source, generation, expiresIn: this.expiresIn });
    if (source === 'refresh') this.#emitRefresh('self');
  }

  #install(token, remaining, lifetime, generation) {
    this.#access = token;
    this.#lifetime = lifetime;
    this.#expiresAt = performance.now() + remaining;
    this.#generation = generation;
    this.#schedule();
    for (const resolve of this.#adoptionWaiters) resolve();
    this.#adoptionWaiters.clear();
  }

  #share(source) {
    if (!this.#access) return;
    this.#broadcast({
      type: 'tokens',
      source,
      generation: this.#generation,
      accessToken: this.#access,
      // Remaining time, not `exp`: each tab keeps its own monotonic clock.
      expiresIn: this.expiresIn,
      lifetime: this.#lifetime / 1000,
    });
  }

  #end(reason, { broadcast = false, always = false }) {
    const wasSignedIn = this.#access !== null;
    clearTimeout(this.#timer);
    this.#access = null;
    this.#expiresAt = 0;
    this.#lifetime = 0;
    this.#attempt = 0;
    if (broadcast) {
      // A higher generation makes tabs ignore token messages older than this logout.
      this.#generation = Math.max(this.#generation, readGeneration()) + 1;
      writeGeneration(this.#generation);
      this.#broadcast({ type: 'loggedout', reason, generation: this.#generation });
    }
    if (wasSignedIn || always) this.#emit('loggedout', { reason });
  }

  #onMessage(message) {
    if (!message || typeof message !== 'object') return;
    if (message.type === 'tokens' && message.generation > this.#generation) {
      const remaining = Number(message.expiresIn) * 1000;
      this.#install(message.accessToken, remaining, Number(message.lifetime) * 1000, message.generation);
      this.#emit('tokens', { source: 'peer', generation: this.#generation, expiresIn: this.expiresIn });
      if (message.source === 'refresh') this.#emitRefresh('peer');
    } else if (message.type === 'loggedout') {
      this.#generation = Math.max(this.#generation, Number(message.generation) || 0);
      this.#end(message.reason, {});
    } else if (message.type === 'hello') {
      if (this.#access && this.expiresIn > 0) this.#share('peer');
    } else if (message.type === 'released') {
      for (const resolve of this.#releaseWaiters) resolve();
      this.#releaseWaiters.clear();
    }
  }

  #awaitAdoption(ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#adoptionWaiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#adoptionWaiters.add(done);
    });
  }

  // --- cross-tab exclusion ------------------------------------------------

  #exclusive(task) {
    if (this.#coordination === 'web-locks') return this.#withWebLock(task);
    if (this.#coordination === 'broadcast-lease') return this.#withLease(task);
    return task();
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
      this.#releaseLease();
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
      await new Promise((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.#releaseWaiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, Math.min(250, lease.until - now));
        this.#releaseWaiters.add(done);
      });
    }
  }

  #releaseLease() {
    if (!this.#holdsLease) return;
    this.#holdsLease = false;
    if (readLease()?.owner === this.#tabId) {
      try {
        localStorage.removeItem(LEASE_KEY);
      } catch {
        // Storage went away; the lease expires by itself.
      }
    }
    this.#broadcast({ type: 'released' });
  }

  // --- plumbing -----------------------------------------------------------

  #url(path) {
    return `${this.#baseUrl}${path}`;
  }

  #post(path, init) {
    return fetch(this.#url(path), { method: 'POST', credentials: this.#credentials, ...init }).catch(
      (cause) => {
        throw new TokenstileError('network_error', String(cause?.message ?? cause));
      },
    );
  }

  /** `POST /auth/logout` with the cookie (and the bearer, if given); `null` with neither. */
  async #cookieLogout(bearer) {
    const headers = { 'X-Token-Transport': 'cookie' };
    const csrf = readCookie(CSRF_COOKIE);
    if (csrf) headers['X-CSRF-Token'] = csrf;
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
    if (!csrf && !bearer) return null;
    return this.#post('/auth/logout', { headers });
  }

  async #json(response) {
    if (!response.ok) throw await TokenstileError.fromResponse(response);
    return response.json();
  }

  #broadcast(message) {
    try {
      this.#channel?.postMessage(message);
    } catch {
      // A closed channel: this tab is going away.
    }
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #emitRefresh(source) {
    this.#emit('refresh', {
      source,
      at: new Date(),
      expiresIn: this.expiresIn,
      generation: this.#generation,
    });
  }

  #listen(target, type, listener) {
    if (!target?.addEventListener) return;
    target.addEventListener(type, listener);
    this.#listeners.push([target, type, listener]);
  }
}

/**
 * A client with `options`; the same as `new TokenstileClient(options)`.
 * @param {ClientOptions} [options]
 * @returns {TokenstileClient}
 */
export function createClient(options) {
  return new TokenstileClient(options);
}

function withBearer(request, token) {
  if (!token) return request;
  const headers = new Headers(request.headers);
  headers.set('Authorization', `Bearer ${token}`);
  return new Request(request, { headers });
}

function readCookie(name) {
  for (const part of (globalThis.document?.cookie ?? '').split(';')) {
    const [key, ...rest] = part.trim().split('=');
    if (key === name) return decodeURIComponent(rest.join('='));
  }
  return null;
}

function decodeClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part.padEnd(Math.ceil(part.length / 4) * 4, '=')));
  } catch {
    return null;
  }
}

function readGeneration() {
  try {
    return Number.parseInt(localStorage.getItem(GENERATION_KEY) ?? '0', 10) || 0;
  } catch {
    return 0;
  }
}

function writeGeneration(generation) {
  try {
    localStorage.setItem(GENERATION_KEY, String(generation));
  } catch {
    // Without storage, the BroadcastChannel messages still carry the generation.
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
