// The local OpenID Connect provider (npm oidc-provider) for `just run`,
// `just token` and the tests. Development only: in-memory sessions, fixed
// client secrets, and sign-in asks for a user name with no password.
//
//   OIDC_PORT=0 OIDC_KEYS=/tmp/x/keys.json node scripts/oidc/provider.mjs
//
// Environment (all optional):
//   OIDC_PORT       port to listen on; 0 (the default) picks a free one
//   OIDC_HOST       address to listen on (default 127.0.0.1)
//   OIDC_ISSUER_HOST  the host name in the issuer's URL (default OIDC_HOST):
//                   what clients reach it by (the lab's `idp`)
//   OIDC_TLS_CERT, OIDC_TLS_KEY  PEM files: serve https (the issuer is
//                   then https://…); without them plain http
//   OIDC_KEYS       private JWKS file, created on first start
//                   (default .local/oidc/dev/keys.json); see keys.mjs
//   OIDC_AUDIENCE   the access tokens' `aud` (default orders-api)
//   OIDC_RESOURCE   the resource indicator (RFC 8707) naming the API; it must
//                   be an absolute URI, so it defaults to OIDC_AUDIENCE when
//                   that is one and to urn:OIDC_AUDIENCE otherwise. Clients
//                   need not send it: it is every client's default resource.
//   OIDC_ALG        access token signing alg: RS256 (default), ES256, EdDSA
//   OIDC_ACCOUNTS   JSON file {"user": ["staff"], "other": {"roles": ["staff"],
//                   "stores": ["gangnam"]}, ...}: roles (and the stores staff
//                   work at) at sign-in
//   OIDC_WEB_REDIRECT_URIS, OIDC_WEB_POST_LOGOUT_REDIRECT_URIS  comma-separated
//   OIDC_DEPS       directory whose node_modules holds oidc-provider
//                   (default .local/oidc, where scripts/oidc.sh installs it)
//   OIDC_EXIT_WITH_STDIN=1  exit when stdin closes (test harnesses)
//   OIDC_REMOVE_ON_EXIT  a directory (its keys', say) removed when it exits
//
// stdout carries only the lines a caller waits for: `ready ISSUER` once it
// answers, and `reloaded KID...` after SIGHUP re-read the keys (and accounts).
// The log (requests' outcomes, oidc-provider's notices) goes to stderr.
// Rotate: `node scripts/oidc/keys.mjs rotate FILE`, then SIGHUP, then wait for
// `reloaded`: the new kid signs from then on; SIGTERM stops it.
import http from 'node:http';
import https from 'node:https';
import { readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { loadOrCreate } from './keys.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const env = process.env;
const PORT = Number(env.OIDC_PORT || 0);
const HOST = env.OIDC_HOST || '127.0.0.1';
const TLS = env.OIDC_TLS_CERT && env.OIDC_TLS_KEY
  ? { cert: readFileSync(env.OIDC_TLS_CERT), key: readFileSync(env.OIDC_TLS_KEY) }
  : null;
const KEYS = resolve(env.OIDC_KEYS || join(here, '../../.local/oidc/dev/keys.json'));
const AUDIENCE = env.OIDC_AUDIENCE || 'orders-api';
const RESOURCE = env.OIDC_RESOURCE || (URL.canParse(AUDIENCE) ? AUDIENCE : `urn:${AUDIENCE}`);
const ALGS = new Set(['RS256', 'ES256', 'EdDSA']);
const ALG = env.OIDC_ALG || 'RS256';
const SCOPE = 'orders'; // the API's one scope
const DEV_GRANT = 'urn:orders:params:oauth:grant-type:dev-token';
const USER_ID = /^[A-Za-z0-9._-]{1,100}$/; // domain::UserId
const ROLES = new Set(['staff', 'operator']);
const STORE_ID = /^[A-Za-z0-9._-]{1,40}$/; // domain::StoreId
const storeList = (value) => value.split(',').map((s) => s.trim()).filter(Boolean);
const list = (value, fallback) => (value || fallback).split(',').map((s) => s.trim()).filter(Boolean);

console.info = console.error; // oidc-provider prints notices with console.info
const log = (...args) => console.error(new Date().toISOString(), ...args);
if (!ALGS.has(ALG)) throw new Error(`OIDC_ALG must be one of ${[...ALGS]}`);

// The package is installed outside the source tree (scripts/oidc.sh), so it is
// resolved from there rather than from this file's directory.
const deps = createRequire(join(resolve(env.OIDC_DEPS || join(here, '../../.local/oidc')), 'package.json'));
// Each step of a start is logged with its time, so a start that stalls says where.
const began = Date.now();
const { default: Provider, errors } = await import(pathToFileURL(deps.resolve('oidc-provider')).href);
log(`oidc-provider loaded in ${Date.now() - began} ms`);

// The service at the root, and under the prefix the tests and the lab serve
// it at (PATH_PREFIX=/coffee).
const WEB_REDIRECTS = list(env.OIDC_WEB_REDIRECT_URIS, 'http://127.0.0.1:8080/auth/callback,http://127.0.0.1:8080/coffee/auth/callback');
const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);

const CLIENTS = [
  { // `just token`: only the dev grant below. Secret: orders-dev-secret.
    client_id: 'orders-dev',
    client_secret: 'orders-dev-secret',
    grant_types: [DEV_GRANT],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
  },
  { // The service's web pages: authorization code + PKCE. Secret: orders-web-secret.
    // Registered as a loopback ("native") client so that the redirect URIs'
    // port may vary (RFC 8252, section 7.3): `just run` on another port and
    // each test's service on its own free port sign in without registering it.
    // Redirect URIs on other hosts (the lab's http://lb/…) make it a web
    // client, whose URIs must match exactly.
    client_id: 'orders-web',
    client_secret: 'orders-web-secret',
    application_type: WEB_REDIRECTS.every((uri) => LOOPBACK_HOSTS.has(new URL(uri).hostname)) ? 'native' : 'web',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: WEB_REDIRECTS,
    post_logout_redirect_uris: list(env.OIDC_WEB_POST_LOGOUT_REDIRECT_URIS, 'http://127.0.0.1:8080/,http://127.0.0.1:8080/coffee/'),
    token_endpoint_auth_method: 'client_secret_basic',
  },
];

// Roles at interactive sign-in: the accounts file first, then a naming rule.
function rolesFor(accounts, user) {
  if (Object.hasOwn(accounts, user)) {
    const account = accounts[user];
    return Array.isArray(account) ? account : account.roles;
  }
  if (user === 'barista' || user.startsWith('barista.') || user.startsWith('staff')) return ['staff'];
  if (user === 'ops' || user.startsWith('operator')) return ['operator'];
  return [];
}

// The stores a member of staff works at: the accounts file first, then a
// naming rule (`barista.gangnam`, `staff2.gangnam.jamsil` work at those
// stores); none said is the default store (the service's rule, not ours).
function storesFor(accounts, user) {
  if (Object.hasOwn(accounts, user) && !Array.isArray(accounts[user])) return accounts[user].stores ?? [];
  return user.split('.').slice(1).filter((s) => STORE_ID.test(s));
}

const resourceServer = (alg = ALG) => ({
  scope: SCOPE, audience: AUDIENCE, accessTokenFormat: 'jwt', accessTokenTTL: 3600, jwt: { sign: { alg } },
});

// oidc-provider has no password grant; this one mints a token for any valid
// user name, for the dev client only (its grant_types is all it may use).
async function devTokenGrant(ctx) {
  const { params, client, provider } = ctx.oidc;
  const bad = (message) => new errors.InvalidRequest(message);
  if (!USER_ID.test(params.username ?? '')) throw bad('username must be 1 to 100 letters, digits, "-", "_" or "."');
  if (params.role !== undefined && !ROLES.has(params.role)) throw bad('role must be staff or operator');
  if (params.ttl !== undefined && !(/^[1-9][0-9]{0,4}$/.test(params.ttl) && +params.ttl <= 86400)) throw bad('ttl must be 1 to 86400 seconds');
  if (params.alg !== undefined && !ALGS.has(params.alg)) throw bad(`alg must be one of ${[...ALGS]}`);
  if (params.stores !== undefined && !(storeList(params.stores).length <= 64 && storeList(params.stores).every((s) => STORE_ID.test(s)))) {
    throw bad('stores must be up to 64 store ids, comma-separated');
  }
  if ((params.resource ?? RESOURCE) !== RESOURCE) throw new errors.InvalidTarget(`the only resource is ${RESOURCE}`);

  // The provider's own AccessToken model: its keys, its JWT format and claims.
  const token = new provider.AccessToken({
    accountId: params.username, client, gty: DEV_GRANT, scope: SCOPE,
    expiresIn: params.ttl === undefined ? undefined : +params.ttl,
  });
  token.resourceServer = new provider.ResourceServer(RESOURCE, resourceServer(params.alg));
  ctx.oidc.entity('AccessToken', token);
  const accessToken = await token.save();
  ctx.body = { access_token: accessToken, token_type: token.tokenType, expires_in: token.expiration, scope: token.scope };
}

// Every client here is ours (there is no registration endpoint): grant what
// it asks for instead of showing a consent screen (the default asks on first use).
async function loadExistingGrant(ctx) {
  const { client, session, provider } = ctx.oidc;
  const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
  return grantFor(provider, client.clientId, session.accountId, grantId,
    [...ctx.oidc.requestParamOIDCScopes], [...ctx.oidc.requestParamClaims]);
}

async function grantFor(provider, clientId, accountId, grantId, scopes, claims) {
  const grant = (grantId && await provider.Grant.find(grantId)) || new provider.Grant({ clientId, accountId });
  grant.addOIDCScope(scopes.filter((s) => s !== SCOPE).join(' '));
  grant.addOIDCClaims(claims);
  grant.addResourceScope(RESOURCE, SCOPE);
  await grant.save();
  return grant;
}

function build(issuer, jwks) {
  const accounts = env.OIDC_ACCOUNTS ? JSON.parse(readFileSync(env.OIDC_ACCOUNTS, 'utf8')) : {};
  for (const [user, account] of Object.entries(accounts)) {
    const roles = Array.isArray(account) ? account : account?.roles;
    if (!Array.isArray(roles) || !roles.every((r) => typeof r === 'string')) throw new Error(`OIDC_ACCOUNTS: ${user}'s roles must be an array of strings`);
    const stores = Array.isArray(account) ? [] : account.stores ?? [];
    if (!Array.isArray(stores) || !stores.every((s) => typeof s === 'string' && STORE_ID.test(s))) throw new Error(`OIDC_ACCOUNTS: ${user}'s stores must be an array of store ids`);
  }
  const provider = new Provider(issuer, {
    jwks,
    clients: CLIENTS,
    cookies: { keys: ['local-oidc-only-not-a-secret'] }, // the same for every build: sessions survive SIGHUP
    responseTypes: ['code'], // no implicit flow
    pkce: { required: () => true },
    claims: { openid: ['sub'], profile: ['preferred_username'], roles: ['roles', 'stores'] },
    conformIdTokenClaims: false, // code flow: scope claims in the ID token too, not only at /me
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    features: {
      devInteractions: { enabled: false }, // asks for a password it ignores, accepts any login
      resourceIndicators: {
        enabled: true,
        defaultResource: () => RESOURCE,
        useGrantedResource: () => true, // the code's resource even when openid was asked for
        getResourceServerInfo(ctx, indicator) {
          if (indicator !== RESOURCE) throw new errors.InvalidTarget(`the only resource is ${RESOURCE}`);
          return resourceServer();
        },
      },
    },
    async findAccount(ctx, sub) {
      if (!USER_ID.test(sub)) return undefined;
      return { accountId: sub, claims: async () => ({ sub, preferred_username: sub, roles: rolesFor(accounts, sub), stores: storesFor(accounts, sub) }) };
    },
    async extraTokenClaims(ctx, token) {
      if (!token.accountId) return undefined;
      const dev = token.gty === DEV_GRANT;
      const roles = dev ? [ctx.oidc.params.role].filter(Boolean) : rolesFor(accounts, token.accountId);
      const stores = dev ? storeList(ctx.oidc.params.stores ?? '') : storesFor(accounts, token.accountId);
      return { preferred_username: token.accountId, roles, ...(stores.length ? { stores } : {}) };
    },
    formats: { customizers: { jwt(ctx, token, jwt) { jwt.payload.nbf = jwt.payload.iat; } } },
    loadExistingGrant,
    ttl: {
      AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL ?? 3600,
      AuthorizationCode: 60, IdToken: 3600, Interaction: 600, Session: 8 * 3600, Grant: 8 * 3600,
    },
    clientBasedCORS: () => false,
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Error', `<pre id="error">${esc(JSON.stringify(out, null, 2))}</pre>`);
    },
  });
  provider.registerGrantType(DEV_GRANT, devTokenGrant, ['username', 'role', 'stores', 'ttl', 'alg', 'resource']);
  provider.on('grant.success', (ctx) => log('token issued', ctx.oidc.params.grant_type, ctx.oidc.client.clientId,
    ctx.oidc.entities.AccessToken?.accountId ?? ''));
  for (const event of ['grant.error', 'authorization.error', 'end_session.error', 'server_error']) {
    provider.on(event, (ctx, err) => log(event, err.message, err.error_description ?? ''));
  }
  return provider;
}

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!doctype html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head><body>${body}</body></html>\n`;
function send(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(html);
}
const loginForm = (uid, username = '', error = '') => page('Sign in', `<h1>Sign in</h1>
<p>Local development provider: any user name, no password.</p>
${error ? `<p id="error" role="alert">${esc(error)}</p>` : ''}
<form id="login" method="post" action="/interaction/${esc(uid)}/login">
  <label for="username">User name</label>
  <input id="username" name="username" value="${esc(username)}" required autofocus autocomplete="username">
  <button id="sign-in" type="submit">Sign in</button>
</form>
<p><a id="cancel" href="/interaction/${esc(uid)}/abort">Cancel</a></p>`);

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 10_000) throw Object.assign(new Error('form too large'), { status: 413 });
  }
  return new URLSearchParams(body);
}

// Our sign-in page (the provider redirects to it with a cookie scoped to
// /interaction/UID): a user name, validated as the service validates user ids.
async function interaction(provider, req, res) {
  const [, , uid, action = ''] = new URL(req.url, provider.issuer).pathname.split('/');
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, page('Error', '<p id="error">stale sign-in page; start again</p>'));
  if (req.method === 'GET' && action === 'abort') {
    return provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'sign-in cancelled' }, { mergeWithLastSubmission: false });
  }
  if (details.prompt.name === 'consent') {
    // Asked only for a loopback ("native") client, once per sign-in (RFC
    // 8252 wants the user to see it); every client here is ours, so it is
    // granted as loadExistingGrant grants, without a screen.
    const scopes = String(details.params.scope || 'openid').split(' ');
    const grant = await grantFor(provider, details.params.client_id, details.session.accountId, details.grantId, scopes, []);
    return provider.interactionFinished(req, res, { consent: { grantId: grant.jti } }, { mergeWithLastSubmission: true });
  }
  if (details.prompt.name !== 'login') { // loadExistingGrant leaves no other consent to ask for
    return send(res, 501, page('Error', `<p id="error">prompt ${esc(details.prompt.name)} is not implemented</p>`));
  }
  if (req.method === 'GET' && action === '') return send(res, 200, loginForm(uid, details.params.login_hint));
  if (req.method === 'POST' && action === 'login') {
    const username = (await readForm(req)).get('username') ?? '';
    if (!USER_ID.test(username)) {
      return send(res, 400, loginForm(uid, username, 'A user name is 1 to 100 letters, digits, "-", "_" or "."'));
    }
    return provider.interactionFinished(req, res, { login: { accountId: username } }, { mergeWithLastSubmission: false });
  }
  return send(res, 404, page('Not found', '<p id="error">not found</p>'));
}

let current; // { provider, callback }: replaced whole on SIGHUP, behind the same server
let issuer;
const handle = (req, res) => {
  if (!current) return void res.writeHead(503, { 'retry-after': '1' }).end();
  const { provider, callback } = current;
  if (!req.url.startsWith('/interaction/')) return void callback(req, res);
  interaction(provider, req, res).catch((err) => {
    log('interaction', err.message);
    if (!res.headersSent) send(res, err.status ?? 500, page('Error', `<p id="error">${esc(err.message)}</p>`));
  });
};
const server = TLS ? https.createServer(TLS, handle) : http.createServer(handle);
const install = () => {
  const jwks = loadOrCreate(KEYS);
  // Every alg must have a key: an empty or partial file would only fail later, per token.
  const kinds = new Set(jwks.keys?.map((k) => k.kty));
  if (!['RSA', 'EC', 'OKP'].every((kty) => kinds.has(kty))) throw new Error(`${KEYS} must hold an RSA, an EC and an OKP key`);
  const provider = build(issuer, jwks);
  current = { provider, callback: provider.callback() };
  return jwks.keys.map((k) => k.kid).join(' ');
};
server.on('error', (err) => { log('cannot listen:', err.message); process.exit(1); });
server.listen(PORT, HOST, () => {
  issuer = `${TLS ? 'https' : 'http'}://${env.OIDC_ISSUER_HOST || HOST}:${server.address().port}`;
  log(`listening after ${Date.now() - began} ms`);
  install();
  log(`ready after ${Date.now() - began} ms: issuer ${issuer}, audience ${AUDIENCE}, resource ${RESOURCE}, keys ${KEYS}`);
  console.log(`ready ${issuer}`);
});
process.on('SIGHUP', () => {
  try {
    console.log(`reloaded ${install()}`);
  } catch (err) { // a bad keys file must not take the running provider down
    log('reload failed, keeping the previous keys:', err.message);
  }
});
const exit = () => {
  if (env.OIDC_REMOVE_ON_EXIT) rmSync(env.OIDC_REMOVE_ON_EXIT, { recursive: true, force: true });
  process.exit(0);
};
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, exit);
// A test harness keeps our stdin open for as long as it lives: when it ends
// (however it ends) the pipe closes and the provider goes with it.
if (env.OIDC_EXIT_WITH_STDIN === '1') {
  process.stdin.on('end', exit);
  process.stdin.on('error', exit);
  process.stdin.resume();
}
