// The OpenID provider of heim's browser sign-in test: oidc-provider on
// loopback, standing in for Google. Its development interactions are the
// login form (any password) and the consent page.
//
//   node idp.mjs PORT CLIENT_SECRET REDIRECT_URI
//
// The issuer is exactly http://127.0.0.1:PORT. One client, `heim`: code flow
// with PKCE (S256, required), client_secret_basic (oidc-provider takes
// client_secret_post from the same client too). Accounts are found by login
// name (`alice`, `mallory`, `unverified`); email and groups come from the
// userinfo endpoint only (oidc-provider's default conformIdTokenClaims: the
// ID token carries sub and the protocol claims).
//
// Prints one JSON line {"issuer": ...} on stdout once listening; logs each
// request and every error event as a JSON line on stderr; exits on SIGTERM.

import { generateKeyPairSync, randomUUID } from 'node:crypto';

import Provider from 'oidc-provider';

const [port, clientSecret, redirectUri] = process.argv.slice(2);
if (!port || !clientSecret || !redirectUri) {
  console.error('usage: node idp.mjs PORT CLIENT_SECRET REDIRECT_URI');
  process.exit(64);
}
const issuer = `http://127.0.0.1:${port}`;

// Login name -> the claims userinfo answers (filtered by granted scopes).
const ACCOUNTS = {
  alice: {
    email: 'alice@example.com',
    email_verified: true,
    groups: ['staff'],
    name: 'Alice Example',
    preferred_username: 'alice',
  },
  mallory: {
    email: 'mallory@example.com',
    email_verified: true,
    groups: ['visitors'],
    name: 'Mallory Example',
    preferred_username: 'mallory',
  },
  // In the right group, so only the unverified email can be why heim refuses.
  unverified: {
    email: 'unverified@example.com',
    email_verified: false,
    groups: ['staff'],
    name: 'Unverified Example',
    preferred_username: 'unverified',
  },
};

// A fresh RS256 signing key per run (as Google's rotate), not the
// well-known development key oidc-provider falls back to.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };

const log = (obj) => process.stderr.write(`${JSON.stringify({ idp: true, ...obj })}\n`);

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'heim',
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  jwks: { keys: [signingKey] },
  pkce: { required: () => true },
  // Each key is a scope and the claims it releases; `groups` becomes a scope.
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  features: {
    devInteractions: { enabled: true },
  },
  cookies: { keys: ['heim-e2e-idp-cookie-key'] },
  async findAccount(_ctx, sub) {
    const claims = ACCOUNTS[sub];
    if (!claims) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, ...claims };
      },
    };
  },
});

for (const event of [
  'server_error',
  'authorization.error',
  'grant.error',
  'userinfo.error',
  'introspection.error',
  'discovery.error',
  'end_session.error',
]) {
  provider.on(event, (...args) => {
    const err = args.find((a) => a instanceof Error);
    log({
      event,
      error: err?.message,
      error_description: err?.error_description,
      detail: err?.error_detail,
    });
  });
}
provider.on('grant.success', () => log({ event: 'grant.success' }));

// One line per request: what heim and the browser asked for, and the answer.
provider.use(async (ctx, next) => {
  await next();
  log({
    method: ctx.method,
    path: ctx.path,
    status: ctx.status,
    auth: ctx.headers.authorization?.split(' ')[0],
  });
});

const server = provider.listen(Number(port), '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});
server.on('error', (err) => {
  log({ event: 'listen', error: err.message });
  process.exit(1);
});

const stop = () => {
  server.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// The test holds our stdin; when it dies, so do we.
process.stdin.on('end', stop);
process.stdin.resume();
