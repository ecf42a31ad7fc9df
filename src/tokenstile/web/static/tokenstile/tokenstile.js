/**
 * tokenstile browser client: dependency-free ES modules, served as they are.
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
 * This module puts together the ones beside it, each one seam of the client:
 * `token-store.js` (the token in memory and the shared generation),
 * `refresh-scheduler.js` (when to refresh, backoff), `tab-lock.js` (one refresh
 * across tabs), `tab-channel.js` (messages between tabs), `server.js` (the
 * requests to tokenstile), `bearer-fetch.js` (the `fetch` wrapper) and
 * `errors.js`. They import each other by relative paths, so the directory can
 * be served under any prefix.
 *
 * @example
 * import { TokenstileClient } from '/static/tokenstile.js';
 * const auth = new TokenstileClient();
 * auth.addEventListener('loggedout', (event) => showLogin(event.detail.reason));
 * if (!(await auth.restore())) await auth.login('alice', 'correct horse battery');
 * const response = await auth.fetch('/api/items');
 *
 * @module tokenstile/tokenstile
 */

import { bearerFetch } from './bearer-fetch.js';
import { TokenstileError } from './errors.js';
import { RefreshScheduler } from './refresh-scheduler.js';
import { readCsrfCookie, readJson, TokenstileServer } from './server.js';
import { TabChannel } from './tab-channel.js';
import { TabLock } from './tab-lock.js';
import { readSharedGeneration, TokenStore } from './token-store.js';

export { TokenstileError };

const PEER_REPLY_MS = 150;
const ADOPTION_WAIT_MS = 1000;

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
  #server;
  #requestTimeout;
  #tokens = new TokenStore();
  #scheduler;
  #channel;
  #lock;
  #refreshing = null;
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
    this.#server = new TokenstileServer(baseUrl);
    this.#requestTimeout = requestTimeout;
    this.#scheduler = new RefreshScheduler({
      refreshRatio,
      refreshMarginMs: refreshMargin * 1000,
      maxRetries,
      onDue: () => this.refresh().catch(() => null),
    });
    this.#channel = TabChannel.open((message) => this.#onMessage(message));
    this.#lock = new TabLock({ channel: this.#channel, requestTimeout, lockTimeout });

    this.#listen(globalThis.document, 'visibilitychange', () => {
      if (document.visibilityState === 'visible') this.#refreshIfDue();
    });
    this.#listen(globalThis, 'online', () => this.#refreshIfDue());
    this.#listen(globalThis, 'pagehide', () => this.#lock.release());
  }

  /** The current access token, or `null`. Held in memory only. */
  get accessToken() {
    return this.#tokens.accessToken;
  }

  /** Seconds until the access token expires (0 without one), by `performance.now()`. */
  get expiresIn() {
    return this.#tokens.expiresIn;
  }

  /** Lifetime in seconds of the current access token, as the server gave it. */
  get lifetime() {
    return this.#tokens.lifetimeMs / 1000;
  }

  /** Whether an access token is held (it may have expired; see `expiresIn`). */
  get signedIn() {
    return this.#tokens.accessToken !== null;
  }

  /** The session id (`sid` claim) of the current access token, or `null`. */
  get sessionId() {
    return this.#tokens.sessionId;
  }

  /** Counter of token changes shared by this origin's tabs; rises on every refresh. */
  get generation() {
    return this.#tokens.generation;
  }

  /** How tabs coordinate refreshes: `web-locks`, `broadcast-lease` or `none`. */
  get coordination() {
    return this.#lock.mode;
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
    const response = await this.#server.post('/auth/login', {
      headers: { 'Content-Type': 'application/json', 'X-Token-Transport': 'cookie' },
      body: JSON.stringify({ username, password, remember_me: rememberMe }),
    });
    if (!response.ok) throw await TokenstileError.fromResponse(response);
    this.#scheduler.succeeded();
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
    const response = await this.#server.post('/auth/register', {
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username, password }),
    });
    return readJson(response);
  }

  /**
   * Recover the session after a page load: adopt a token from another open tab,
   * or else refresh silently with the cookie. Makes no request without a CSRF cookie.
   * @returns {Promise<boolean>} whether this client is signed in afterwards
   * @throws {TokenstileError} on a 503 or network error (a retry is scheduled)
   */
  async restore() {
    if (this.#tokens.live) return true;
    if (!readCsrfCookie()) return false;
    if (this.#channel) {
      this.#channel.post({ type: 'hello' });
      await this.#tokens.whenInstalled(PEER_REPLY_MS);
      if (this.#tokens.live) return true;
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
      const known = { local: this.#tokens.generation, shared: readSharedGeneration() };
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
  fetch(input, init = {}) {
    return bearerFetch(input, init, {
      origin: this.#server.origin,
      tokens: this.#tokens,
      refresh: () => this.refresh(),
    });
  }

  /**
   * The signed-in user (`GET /users/me`).
   * @returns {Promise<{id: string, username: string}>}
   * @throws {TokenstileError}
   */
  async me() {
    return readJson(await this.fetch(this.#server.url('/users/me')));
  }

  /**
   * The user's live sessions (`GET /auth/sessions`).
   * @returns {Promise<Session[]>}
   * @throws {TokenstileError}
   */
  async sessions() {
    return readJson(await this.fetch(this.#server.url('/auth/sessions')));
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
    const response = await this.fetch(this.#server.url(path), { method: 'DELETE' });
    if (!response.ok) throw await TokenstileError.fromResponse(response);
    if (own) {
      await this.#server.logoutByCookie(null).catch(() => null); // only to clear the dead cookies
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
    const bearer = this.expiresIn > 0 ? this.#tokens.accessToken : null;
    let response = await this.#server.logoutByCookie(bearer);
    if (response?.status === 401 && bearer) response = await this.#server.logoutByCookie(null);
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
    const response = await this.fetch(this.#server.url('/auth/logout-all'), { method: 'POST' });
    if (!response.ok && response.status !== 401) {
      throw await TokenstileError.fromResponse(response);
    }
    // The session is over already; this only makes the server clear the cookies.
    await this.#server.logoutByCookie(null).catch(() => null);
    this.#end('logout_all', { broadcast: true, always: true });
  }

  /** Stop timers and listeners and close the channel; the tokens are forgotten. */
  close() {
    this.#scheduler.cancel();
    this.#lock.release();
    for (const [target, type, listener] of this.#listeners) {
      target.removeEventListener(type, listener);
    }
    this.#listeners = [];
    this.#channel?.close();
    this.#channel = null;
    this.#tokens.dropToken();
  }

  // --- refreshing ---------------------------------------------------------

  async #refreshAcrossTabs(known) {
    return this.#lock.run(async () => {
      if (this.#adoptedSince(known)) return this.#tokens.accessToken;
      // Another tab refreshed while we waited; its broadcast may still be on the way.
      if (readSharedGeneration() > known.shared) {
        await this.#tokens.whenInstalled(ADOPTION_WAIT_MS);
        if (this.#adoptedSince(known)) return this.#tokens.accessToken;
      }
      return this.#refreshWithCookie();
    });
  }

  #adoptedSince(known) {
    return this.#tokens.generation !== known.local && this.#tokens.live;
  }

  async #refreshWithCookie() {
    const csrf = readCsrfCookie();
    if (!csrf) {
      this.#end('no_session', {});
      return null;
    }
    let response;
    try {
      response = await this.#server.refreshByCookie(csrf, this.#requestTimeout);
    } catch (error) {
      throw this.#retryLater(error);
    }
    if (response.ok) {
      this.#scheduler.succeeded();
      this.#accept(await response.json(), 'refresh');
      return this.#tokens.accessToken;
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
    this.#emit('error', { error, attempt: this.#scheduler.attempt, retryIn: null, final: true });
    throw error;
  }

  #retryLater(error) {
    this.#emit('error', { error, ...this.#scheduler.retryLater(error.retryAfter) });
    return error;
  }

  #refreshIfDue() {
    if (this.#scheduler.isDue(this.#tokens)) this.refresh().catch(() => null);
  }

  // --- token state --------------------------------------------------------

  #accept(body, source) {
    const generation = this.#tokens.advanceGeneration();
    this.#install(body.access_token, body.expires_in * 1000, body.expires_in * 1000, generation);
    this.#share(source);
    this.#emit('tokens', { source, generation, expiresIn: this.expiresIn });
    if (source === 'refresh') this.#emitRefresh('self');
  }

  #install(token, remaining, lifetime, generation) {
    this.#tokens.install(token, remaining, lifetime, generation);
    this.#scheduler.schedule(this.#tokens);
  }

  #share(source) {
    if (!this.#tokens.accessToken) return;
    this.#channel?.post({
      type: 'tokens',
      source,
      generation: this.#tokens.generation,
      accessToken: this.#tokens.accessToken,
      // Remaining time, not `exp`: each tab keeps its own monotonic clock.
      expiresIn: this.expiresIn,
      lifetime: this.lifetime,
    });
  }

  #end(reason, { broadcast = false, always = false }) {
    const wasSignedIn = this.#tokens.accessToken !== null;
    this.#scheduler.stop();
    this.#tokens.clear();
    if (broadcast) {
      // A higher generation makes tabs ignore token messages older than this logout.
      const generation = this.#tokens.advanceGeneration();
      this.#channel?.post({ type: 'loggedout', reason, generation });
    }
    if (wasSignedIn || always) this.#emit('loggedout', { reason });
  }

  #onMessage(message) {
    if (!message || typeof message !== 'object') return;
    if (message.type === 'tokens' && message.generation > this.#tokens.generation) {
      const remaining = Number(message.expiresIn) * 1000;
      const lifetime = Number(message.lifetime) * 1000;
      this.#install(message.accessToken, remaining, lifetime, message.generation);
      const detail = { source: 'peer', generation: this.generation, expiresIn: this.expiresIn };
      this.#emit('tokens', detail);
      if (message.source === 'refresh') this.#emitRefresh('peer');
    } else if (message.type === 'loggedout') {
      this.#tokens.raiseGeneration(Number(message.generation) || 0);
      this.#end(message.reason, {});
    } else if (message.type === 'hello') {
      if (this.#tokens.live) this.#share('peer');
    } else if (message.type === 'released') {
      this.#lock.onReleased();
    }
  }

  // --- plumbing -----------------------------------------------------------

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #emitRefresh(source) {
    this.#emit('refresh', {
      source,
      at: new Date(),
      expiresIn: this.expiresIn,
      generation: this.generation,
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
