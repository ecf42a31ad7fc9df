// Verify a tokenstile access token from Node, through the JWKS, with `jose`.
//
//   node verify.mjs --jwks https://auth.example/.well-known/jwks.json \
//        --issuer https://auth.example --audience tokenstile < token.txt
//
// The token comes on standard input (not argv, which other users of the host can
// read in the process list). Options fall back to the environment:
// TOKENSTILE_JWKS_URL, TOKENSTILE_ISSUER (default "tokenstile"), TOKENSTILE_AUDIENCE
// (default "tokenstile"), TOKENSTILE_ALGORITHM (default ES256; RS256 and EdDSA too,
// never HS256: a shared secret is not published in a JWKS).
//
// Prints the verified claims as one JSON object and exits 0; otherwise prints
// {"error": code, "detail": sentence} on stderr and exits 1 (2 for a usage error).
//
// A JWKS check proves the token was signed by tokenstile and is unexpired. It cannot
// know that the session was ended (logout, reuse detection): such a token verifies here
// until it expires (ACCESS_TTL). Ask POST /auth/introspect where that matters.

import { parseArgs } from 'node:util';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const ASYMMETRIC = new Set(['RS256', 'ES256', 'EdDSA']);
const LEEWAY_SECONDS = 5; // tokenstile's default LEEWAY

function fail(code, detail, exitCode = 1) {
  process.stderr.write(`${JSON.stringify({ error: code, detail })}\n`);
  process.exit(exitCode);
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8').trim();
}

let options;
try {
  ({ values: options } = parseArgs({
    options: {
      jwks: { type: 'string', default: process.env.TOKENSTILE_JWKS_URL },
      issuer: { type: 'string', default: process.env.TOKENSTILE_ISSUER ?? 'tokenstile' },
      audience: { type: 'string', default: process.env.TOKENSTILE_AUDIENCE ?? 'tokenstile' },
      algorithm: { type: 'string', default: process.env.TOKENSTILE_ALGORITHM ?? 'ES256' },
    },
  }));
} catch (error) {
  fail('usage', error.message, 2);
}
if (!options.jwks) fail('usage', 'give the JWKS URL: --jwks URL or TOKENSTILE_JWKS_URL', 2);
if (!ASYMMETRIC.has(options.algorithm)) {
  fail('usage', `--algorithm must be one of ${[...ASYMMETRIC].join(', ')}`, 2);
}

const token = await readStdin();
if (!token) fail('usage', 'no token on standard input', 2);

const keys = createRemoteJWKSet(new URL(options.jwks), { cooldownDuration: 30_000 });
try {
  const { payload } = await jwtVerify(token, keys, {
    algorithms: [options.algorithm], // pinned: never what the token's header asks for
    issuer: options.issuer,
    audience: options.audience,
    typ: 'at+jwt', // an access token (RFC 9068), never a refresh token
    requiredClaims: ['sub', 'exp', 'iat', 'sid'],
    clockTolerance: LEEWAY_SECONDS,
  });
  process.stdout.write(`${JSON.stringify(payload)}\n`);
} catch (error) {
  fail(error.code ?? 'ERR_UNKNOWN', error.message);
}
