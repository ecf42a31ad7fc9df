/**
 * `fetch` with the access token as a bearer, for tokenstile's origin only.
 *
 * @module tokenstile/bearer-fetch
 */

/**
 * `fetch` with `Authorization: Bearer <token>` when `input` is on `origin`.
 * Refreshes first when the token has run out, and once more on a 401, retrying
 * the request once. Other origins never see the token.
 * @param {RequestInfo | URL} input
 * @param {RequestInit} init
 * @param {object} session
 * @param {string} session.origin the only origin that gets the token
 * @param {{accessToken: string | null, expiresIn: number}} session.tokens the token held
 * @param {() => Promise<unknown>} session.refresh refreshes `tokens`
 * @returns {Promise<Response>}
 */
export async function bearerFetch(input, init, { origin, tokens, refresh }) {
  const request = new Request(input, init);
  if (new URL(request.url).origin !== origin) return fetch(request);
  if (tokens.accessToken && tokens.expiresIn <= 0) await refresh().catch(() => null);
  const token = tokens.accessToken;
  const response = await fetch(withBearer(request.clone(), token));
  if (response.status !== 401 || !token) return response;
  if (tokens.accessToken === token) await refresh().catch(() => null);
  if (!tokens.accessToken || tokens.accessToken === token) return response;
  return fetch(withBearer(request, tokens.accessToken));
}

function withBearer(request, token) {
  if (!token) return request;
  const headers = new Headers(request.headers);
  headers.set('Authorization', `Bearer ${token}`);
  return new Request(request, { headers });
}
