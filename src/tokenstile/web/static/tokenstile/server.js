/**
 * The requests the client makes to tokenstile itself, and the CSRF cookie
 * they echo.
 *
 * @module tokenstile/server
 */

import { networkError, TokenstileError } from './errors.js';

const CSRF_COOKIE = 'tokenstile_csrf';

/** tokenstile at `baseUrl`: its URLs, and the cookie-transport requests to it. */
export class TokenstileServer {
  #baseUrl;
  #origin;
  #credentials;

  /** @param {string} baseUrl where tokenstile answers; `''` for this page's origin */
  constructor(baseUrl) {
    this.#baseUrl = baseUrl.replace(/\/+$/, '');
    this.#origin = new URL(this.#baseUrl || '/', globalThis.location?.href).origin;
    // Cookies go to tokenstile on another origin only if asked for (and CORS allows it).
    this.#credentials = this.#origin === globalThis.location?.origin ? 'same-origin' : 'include';
  }

  /** @returns {string} the origin tokenstile answers on; only it sees the bearer token */
  get origin() {
    return this.#origin;
  }

  /**
   * @param {string} path e.g. `/users/me`
   * @returns {string} the URL of `path` on tokenstile
   */
  url(path) {
    return `${this.#baseUrl}${path}`;
  }

  /**
   * `POST path` with the cookies.
   * @param {string} path
   * @param {RequestInit} init
   * @returns {Promise<Response>} any response, also a failed one
   * @throws {TokenstileError} `network_error` when the server was not reached
   */
  post(path, init) {
    return fetch(this.url(path), { method: 'POST', credentials: this.#credentials, ...init }).catch(
      (cause) => {
        throw networkError(cause);
      },
    );
  }

  /**
   * `POST /auth/refresh` with the refresh cookie and `csrf`, never from the HTTP cache.
   * @param {string} csrf the CSRF cookie's value
   * @param {number} timeoutMs abandon the request after this long
   * @returns {Promise<Response>} any response, also a failed one
   * @throws {TokenstileError} `network_error` when the server was not reached in time
   */
  async refreshByCookie(csrf, timeoutMs) {
    try {
      return await fetch(this.url('/auth/refresh'), {
        method: 'POST',
        credentials: this.#credentials,
        cache: 'no-store',
        headers: {
          'X-Token-Transport': 'cookie',
          'X-CSRF-Token': csrf,
          Accept: 'application/json',
        },
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (cause) {
      throw networkError(cause);
    }
  }

  /**
   * `POST /auth/logout` with the cookie (and `bearer`, if given).
   * @param {string | null} bearer an access token of the session, or `null`
   * @returns {Promise<Response | null>} `null` with neither a CSRF cookie nor `bearer`
   * @throws {TokenstileError} `network_error` when the server was not reached
   */
  async logoutByCookie(bearer) {
    const headers = { 'X-Token-Transport': 'cookie' };
    const csrf = readCsrfCookie();
    if (csrf) headers['X-CSRF-Token'] = csrf;
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
    if (!csrf && !bearer) return null;
    return this.post('/auth/logout', { headers });
  }
}

/** @returns {string | null} the `tokenstile_csrf` cookie's value, `null` without one */
export function readCsrfCookie() {
  for (const part of (globalThis.document?.cookie ?? '').split(';')) {
    const [key, ...rest] = part.trim().split('=');
    if (key === CSRF_COOKIE) return decodeURIComponent(rest.join('='));
  }
  return null;
}

/**
 * The JSON body of a successful response.
 * @param {Response} response
 * @returns {Promise<any>}
 * @throws {TokenstileError} the error a failed response describes
 */
export async function readJson(response) {
  if (!response.ok) throw await TokenstileError.fromResponse(response);
  return response.json();
}
