/**
 * tokenstile browser client: a dependency-free ES module.
 *
 * The client itself is the directory `tokenstile/` beside this file, one module
 * per seam (see `tokenstile/tokenstile.js`); this entry point gives it the URL
 * `/static/tokenstile.js` and the same exports.
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

export { createClient, TokenstileClient, TokenstileError } from './tokenstile/tokenstile.js';
