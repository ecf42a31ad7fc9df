/**
 * The one error class of the tokenstile browser client.
 *
 * @module tokenstile/errors
 */

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
 * The error for a request that never reached the server.
 * @param {unknown} cause what `fetch` rejected with
 * @returns {TokenstileError} code `network_error`, status 0
 */
export function networkError(cause) {
  return new TokenstileError('network_error', String(cause?.message ?? cause));
}
