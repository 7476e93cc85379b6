// A real OpenID Connect provider for Infra's end-to-end tests.
//
//   node provider.mjs CONFIG.json
//
// Prints one JSON line {"issuer": ..., "port": ...} on stdout once listening;
// everything else goes to stderr.
//
// CONFIG: {host, port (0: any free one), adminToken, clients (OIDC client
// metadata), users [{sub, username, password, email, name, groups, disabled}],
// groupsInIdToken, accessTokenTtl, idTokenTtl, refreshTokenTtl (seconds),
// rotateRefreshTokens (default true), deviceFlowInterval (default 1 s)}.
//
// Test-only admin API (Authorization: Bearer adminToken):
//   GET /_admin/users             list users
//   PUT /_admin/users/:sub        JSON body merged into the user (created if new)
//   DELETE /_admin/users/:sub     delete the user
//   GET /_admin/tamper            {"pending": the pending tamper or null}
//   PUT /_admin/tamper            a misbehaving provider, for negative tests:
//                                 JSON {"idToken": {...}} tampers with the ID
//                                 token of the NEXT token-endpoint response that
//                                 carries one (code, refresh or device-code
//                                 grant; errors such as authorization_pending
//                                 do not count), then clears itself. Replaces
//                                 any pending tamper. In idToken:
//                                   "expOffset": S  exp = now + S, iat = exp - 60
//                                   "sign": "other-key"  signed with a fresh key
//                                        that is not in the JWKS (same kid, alg)
//                                   any other name: that claim set to the value
//                                        ("aud", "iss", "nonce", "sub", ...);
//                                        null removes the claim.
//                                 Otherwise the token stays valid: re-signed with
//                                 the provider's own key, header (kid, alg) kept.
//   DELETE /_admin/tamper         clear the pending tamper
import { createPrivateKey, generateKeyPairSync, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import { SignJWT, decodeJwt, decodeProtectedHeader } from 'jose';
import Provider from 'oidc-provider';

// oidc-provider prints notices with console.info (stdout), which must carry
// nothing but the one JSON line.
console.info = console.log = console.error;

const configPath = process.argv[2];
if (!configPath) {
  console.error('usage: node provider.mjs CONFIG.json');
  process.exit(2);
}
const config = JSON.parse(readFileSync(configPath, 'utf8'));
const {
  host = '127.0.0.1',
  port = 0,
  adminToken,
  clients = [],
  groupsInIdToken = true,
  accessTokenTtl = 600,
  idTokenTtl = 600,
  refreshTokenTtl = 86400,
  // A new refresh token on every refresh; the old one then is spent, and
  // reusing it revokes the whole grant.
  rotateRefreshTokens = true,
  deviceFlowInterval = 1,
} = config;
if (!adminToken) {
  console.error('config: adminToken is required');
  process.exit(2);
}

const users = new Map();
function upsertUser(sub, fields) {
  if (typeof fields !== 'object' || fields === null || Array.isArray(fields)) {
    throw new TypeError('a user must be a JSON object');
  }
  const user = { ...users.get(sub), ...fields, sub };
  if (!Array.isArray(user.groups ?? []) || !(user.groups ?? []).every((g) => typeof g === 'string')) {
    throw new TypeError('groups must be an array of strings');
  }
  users.set(sub, user);
  return user;
}
for (const { sub, ...fields } of config.users ?? []) upsertUser(sub, fields);

const LOOPBACKS = new Set(['127.0.0.1', '[::1]', 'localhost']);

// RFC 8252 §7.3: a registered http loopback redirect URI matches any port.
function sameIgnoringLoopbackPort(registered, requested) {
  const a = URL.parse(registered);
  const b = URL.parse(requested);
  if (!a || !b || a.protocol !== 'http:' || b.protocol !== 'http:' || !LOOPBACKS.has(b.hostname)) {
    return false;
  }
  const strip = (u) => `${u.hostname}${u.pathname}${u.search}`;
  return strip(a) === strip(b);
}

function html(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${html(title)}</title></head>
<body><h1>${html(title)}</h1>
${body}
</body></html>`;
}

function loginPage(ctx, clientId, error) {
  ctx.status = 200;
  ctx.type = 'html';
  ctx.set('Cache-Control', 'no-store');
  ctx.body = page('Sign in', `<p>to continue to <b>${html(clientId)}</b></p>
${error ? `<p id="error" style="color:#b00">${html(error)}</p>` : ''}
<form method="post" autocomplete="off">
  <label>Username <input type="text" name="username" autofocus></label><br>
  <label>Password <input type="password" name="password"></label><br>
  <button type="submit" id="login">Sign in</button>
</form>`);
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 65536) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function checkPassword(user, password) {
  const a = Buffer.from(String(user.password ?? ''));
  const b = Buffer.from(String(password ?? ''));
  return a.length === b.length && timingSafeEqual(a, b);
}

// Signing keys: RS256 first (the default for clients that do not ask), ES256 too.
const KEY_TYPES = {
  RS256: ['rsa', { modulusLength: 2048 }],
  ES256: ['ec', { namedCurve: 'P-256' }],
};

// A new private key (KeyObject) for alg. Not generateKeyPairSync(...).privateKey:
// exporting that one as a JWK deadlocks Node 20 now and then, when a garbage
// collection during the export destroys the key generation job (whose
// destructor waits for the lock the export holds): the provider then hangs
// before it listens. A key of its own, made from the DER, shares no lock.
function newPrivateKey(alg) {
  const [type, options] = KEY_TYPES[alg];
  const { privateKey } = generateKeyPairSync(type, {
    ...options,
    privateKeyEncoding: { type: 'pkcs8', format: 'der' },
    publicKeyEncoding: { type: 'spki', format: 'der' },
  });
  return createPrivateKey({ key: privateKey, format: 'der', type: 'pkcs8' });
}

// The private signing keys by kid, also to re-sign tampered ID tokens with.
const signingKeys = new Map();
const jwks = {
  keys: Object.keys(KEY_TYPES).map((alg) => {
    const key = newPrivateKey(alg);
    const kid = randomUUID();
    signingKeys.set(kid, key);
    return { ...key.export({ format: 'jwk' }), alg, use: 'sig', kid };
  }),
};

const isObject = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);

// The pending tamper (PUT /_admin/tamper), or null.
let tamper = null;

function parseTamper(body) {
  if (!isObject(body)) throw new TypeError('a tamper must be a JSON object');
  const unknown = Object.keys(body).filter((k) => k !== 'idToken');
  if (unknown.length) throw new TypeError(`cannot tamper with ${unknown.join(', ')} (only idToken)`);
  const { idToken } = body;
  if (!isObject(idToken) || Object.keys(idToken).length === 0) {
    throw new TypeError('idToken must be a non-empty JSON object');
  }
  if ('expOffset' in idToken && !Number.isFinite(idToken.expOffset)) {
    throw new TypeError('idToken.expOffset must be a number of seconds');
  }
  if ('sign' in idToken && idToken.sign !== 'other-key') throw new TypeError('idToken.sign must be "other-key"');
  return { idToken };
}

// The ID token with the tamper's changes, signed with the key its header names
// (or, for sign: other-key, with a fresh key of the same kind under that kid).
async function tamperIdToken(idToken, { expOffset, sign, ...claims }) {
  const header = decodeProtectedHeader(idToken);
  const payload = { ...decodeJwt(idToken) };
  for (const [name, value] of Object.entries(claims)) {
    if (value === null) delete payload[name];
    else payload[name] = value;
  }
  if (expOffset !== undefined) {
    payload.exp = Math.floor(Date.now() / 1000 + expOffset);
    payload.iat = payload.exp - 60;
  }
  let key = signingKeys.get(header.kid);
  if (!key) throw new Error(`the ID token's kid ${JSON.stringify(header.kid)} is none of the provider's keys`);
  if (sign === 'other-key') key = newPrivateKey(header.alg);
  return new SignJWT(payload).setProtectedHeader(header).sign(key);
}

// Listen first: with port 0 the issuer is only known once the port is.
const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, host, resolve);
});
const boundPort = server.address().port;
const issuer = `http://${host.includes(':') ? `[${host}]` : host}:${boundPort}`;

const provider = new Provider(issuer, {
  clients,
  jwks,
  // Signed cookies; new keys every start, as all state is in memory anyway.
  // Cookies get the Secure flag only when the request is https; the provider
  // keeps Koa's proxy off, so X-Forwarded-Proto cannot make plain http
  // requests look like https (which would make the cookies unusable).
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  // Otherwise a code flow ID token carries only sub when userinfo is enabled.
  conformIdTokenClaims: false,
  responseTypes: ['code'],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    deviceFlow: {
      enabled: true,
      userCodeInputSource(ctx, form, out, err) {
        ctx.body = page('Device sign in', `${err ? `<p id="error" style="color:#b00">${html(err.message)}</p>` : '<p>Enter the code shown on your device</p>'}
${form.replace('</form>', '<button type="submit" id="continue">Continue</button></form>')}`);
      },
      userCodeConfirmSource(ctx, form, client, deviceInfo, userCode) {
        ctx.body = page('Confirm device', `<p>Sign in <b>${html(client.clientName ?? client.clientId)}</b> on the device showing <code id="user_code">${html(userCode)}</code>?</p>
${form.replace('</form>', '<button type="submit" id="confirm">Confirm</button></form>')}`);
      },
      successSource(ctx) {
        ctx.body = page('Device signed in', '<p id="success">You can close this page and return to your device.</p>');
      },
    },
    revocation: { enabled: true },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  // Refresh tokens as real providers give them: only when offline_access
  // was asked for (with prompt=consent, which oidc-provider requires, as
  // OpenID Connect Core 11 says) and granted. This is oidc-provider's own
  // default, spelled out so that no test relies on a friendlier provider.
  issueRefreshToken: (ctx, client, code) => client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
  // Tokens outlive the provider's browser session (as with offline_access).
  expiresWithSession: () => false,
  rotateRefreshToken: rotateRefreshTokens,
  ttl: {
    AccessToken: accessTokenTtl,
    IdToken: idTokenTtl,
    RefreshToken: refreshTokenTtl,
    Grant: refreshTokenTtl,
    Session: refreshTokenTtl,
    Interaction: 3600,
    DeviceCode: 600,
  },
  // Unknown and disabled users have no account: logins, userinfo and refreshes
  // (invalid_grant) all fail for them.
  async findAccount(ctx, sub) {
    const user = users.get(sub);
    if (!user || user.disabled) return undefined;
    return {
      accountId: sub,
      async claims(use) {
        const claims = {
          sub,
          email: user.email,
          email_verified: user.email ? (user.email_verified ?? true) : undefined,
          name: user.name,
          preferred_username: user.username,
          groups: user.groups ?? [],
        };
        if (use === 'id_token' && !groupsInIdToken) delete claims.groups;
        return claims;
      },
    };
  },
  renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', `<p id="error">${html(out.error)}${out.error_description ? `: ${html(out.error_description)}` : ''}</p>`);
  },
});

const { redirectUriAllowed } = provider.Client.prototype;
provider.Client.prototype.redirectUriAllowed = function loopbackAwareRedirectUriAllowed(value) {
  return redirectUriAllowed.call(this, value)
    || this.redirectUris.some((registered) => sameIgnoringLoopbackPort(registered, value));
};

for (const event of ['server_error', 'authorization.error', 'grant.error', 'userinfo.error', 'device_authorization.error', 'code_verification.error']) {
  provider.on(event, (ctx, err) => {
    const why = [err.error_description, err.error_detail].filter(Boolean).join(': ');
    console.error(`${event}: ${err.message}${why ? ` (${why})` : ''}`);
  });
}

// The login form, with consent granted automatically (a first-party client).
async function interaction(ctx) {
  const { prompt, params, session, grantId } = await provider.interactionDetails(ctx.req, ctx.res);
  const finish = async (result, mergeWithLastSubmission) => {
    const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission });
    ctx.status = 303;
    ctx.redirect(returnTo);
  };

  if (prompt.name === 'consent') {
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    return finish({ consent: { grantId: await grant.save() } }, true);
  }
  if (prompt.name !== 'login') ctx.throw(501, `prompt ${prompt.name} not supported`);

  if (ctx.method === 'GET') return loginPage(ctx, params.client_id);
  if (ctx.method !== 'POST') ctx.throw(405);
  const form = new URLSearchParams(await readBody(ctx.req));
  const username = form.get('username') ?? '';
  const user = [...users.values()].find((u) => u.username === username);
  if (!user || !checkPassword(user, form.get('password'))) {
    console.error(`login failed for ${JSON.stringify(username)}: bad credentials`);
    return loginPage(ctx, params.client_id, 'Invalid username or password.');
  }
  if (user.disabled) {
    console.error(`login failed for ${JSON.stringify(username)}: disabled`);
    return loginPage(ctx, params.client_id, 'This account is disabled.');
  }
  return finish({ login: { accountId: user.sub } }, false);
}

function adminAuthorized(ctx) {
  const expected = Buffer.from(`Bearer ${adminToken}`);
  const given = Buffer.from(ctx.get('authorization'));
  if (given.length === expected.length && timingSafeEqual(given, expected)) return true;
  ctx.status = 401;
  ctx.body = { error: 'unauthorized' };
  return false;
}

async function adminTamper(ctx) {
  if (!adminAuthorized(ctx)) return;
  if (ctx.method === 'GET') {
    ctx.body = { pending: tamper };
  } else if (ctx.method === 'PUT') {
    try {
      tamper = parseTamper(JSON.parse(await readBody(ctx.req)));
      console.error(`tamper: pending ${JSON.stringify(tamper)}`);
      ctx.body = { pending: tamper };
    } catch (err) {
      ctx.status = 400;
      ctx.body = { error: err.message };
    }
  } else if (ctx.method === 'DELETE') {
    tamper = null;
    ctx.status = 204;
  } else {
    ctx.status = 405;
    ctx.body = { error: 'method not allowed' };
  }
}

async function admin(ctx, sub) {
  if (!adminAuthorized(ctx)) return;
  if (sub === undefined && ctx.method === 'GET') {
    ctx.body = [...users.values()];
  } else if (sub !== undefined && ctx.method === 'PUT') {
    try {
      ctx.body = upsertUser(sub, JSON.parse(await readBody(ctx.req)));
    } catch (err) {
      ctx.status = 400;
      ctx.body = { error: err.message };
    }
  } else if (sub !== undefined && ctx.method === 'DELETE') {
    ctx.status = users.delete(sub) ? 204 : 404;
  } else {
    ctx.status = 405;
    ctx.body = { error: 'method not allowed' };
  }
}

provider.use(async (ctx, next) => {
  if (/^\/interaction\/[\w-]+$/.test(ctx.path)) {
    try {
      return await interaction(ctx);
    } catch (err) {
      console.error(`interaction: ${err.message}`);
      ctx.status = err.statusCode ?? err.status ?? 500;
      ctx.type = 'html';
      ctx.body = page('Error', `<p id="error">${html(err.error_description ?? err.message)}</p>`);
      return undefined;
    }
  }
  const adminPath = ctx.path.match(/^\/_admin\/users(?:\/([^/]+))?$/);
  if (adminPath) return admin(ctx, adminPath[1] && decodeURIComponent(adminPath[1]));
  if (ctx.path === '/_admin/tamper') return adminTamper(ctx);

  await next();
  // oidc-provider sends no polling interval, and RFC 8628 then means 5 s.
  if (ctx.path === '/device/auth' && ctx.status === 200 && ctx.body?.device_code) {
    ctx.body.interval = deviceFlowInterval;
  }
  // The pending tamper, taken (so used once) by the first token response with an ID token.
  if (tamper && ctx.oidc?.route === 'token' && ctx.status === 200 && typeof ctx.body?.id_token === 'string') {
    const { idToken } = tamper;
    tamper = null;
    try {
      ctx.body.id_token = await tamperIdToken(ctx.body.id_token, idToken);
      console.error(`tamper: applied ${JSON.stringify(idToken)} to the ID token of a ${ctx.oidc.params?.grant_type} response`);
    } catch (err) {
      console.error(`tamper: ${err.message}`);
      ctx.status = 500;
      ctx.body = { error: 'server_error', error_description: `tamper: ${err.message}` };
    }
  }
  return undefined;
});

server.on('request', provider.callback());
process.stdout.write(`${JSON.stringify({ issuer, port: boundPort })}\n`);
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));
