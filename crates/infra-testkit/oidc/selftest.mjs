// Self-test of provider.mjs, drive.mjs and browser.mjs: `node selftest.mjs`.
// Needs nothing running, only /usr/bin/chromium and openssl (for the HTTPS
// web app's certificate); prints PASS/FAIL per check and exits non-zero on any
// failure.
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';

const here = dirname(fileURLToPath(import.meta.url));
const ADMIN = 'admin-token';
const CLIENT = { id: 'infra', secret: 's3cret' };
const ALICE = {
  sub: 'u1', username: 'alice', password: 'pw', email: 'alice@example.com', name: 'Alice',
  groups: ['devs', '/tenant-a/root/admins'], disabled: false,
};

const tmp = await mkdtemp(join(tmpdir(), 'oidc-selftest-'));
const cleanups = [() => rm(tmp, { recursive: true, force: true })];
let passes = 0;
let failures = 0;

async function check(name, fn) {
  try {
    await fn();
    passes += 1;
    console.log(`PASS ${name}`);
  } catch (err) {
    failures += 1;
    console.log(`FAIL ${name}: ${err.message}`);
  }
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

function assertEqual(actual, expected, what) {
  assert(JSON.stringify(actual) === JSON.stringify(expected),
    `${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

// Runs `node script args`, resolving to {code, stdout, stderr}.
function runNode(script, args, timeoutMs = 30_000) {
  const child = spawn(process.execPath, [join(here, script), ...args], { timeout: timeoutMs });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => { stdout += d; });
  child.stderr.on('data', (d) => { stderr += d; });
  return once(child, 'close').then(([code]) => ({ code, stdout, stderr }));
}

async function startProvider(name, extra = {}, extraRedirectUris = []) {
  const configPath = join(tmp, `${name}.json`);
  await writeFile(configPath, JSON.stringify({
    port: 0,
    host: '127.0.0.1',
    adminToken: ADMIN,
    clients: [{
      client_id: CLIENT.id,
      client_secret: CLIENT.secret,
      redirect_uris: ['http://127.0.0.1/callback', 'https://localhost:4443/oidc/callback', ...extraRedirectUris],
      grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    users: [ALICE],
    groupsInIdToken: true,
    accessTokenTtl: 600,
    idTokenTtl: 600,
    refreshTokenTtl: 86400,
    ...extra,
  }));
  const child = spawn(process.execPath, [join(here, 'provider.mjs'), configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  cleanups.push(() => child.kill());
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  let timer;
  const [line] = await Promise.race([
    once(createInterface({ input: child.stdout }), 'line'),
    once(child, 'exit').then(([code]) => { throw new Error(`provider exited with ${code}: ${log}`); }),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`provider not listening after 20 s: ${log}`)), 20_000);
    }),
  ]).finally(() => clearTimeout(timer));
  const { issuer } = JSON.parse(line);
  const discovery = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
  return { issuer, discovery, jwks: createRemoteJWKSet(new URL(discovery.jwks_uri)), log: () => log };
}

// An HTTP server on 127.0.0.1, or with tls an HTTPS one for web.localhost
// (Chromium resolves *.localhost to loopback by itself); resolves to its base URL.
async function listen(handler, tls) {
  const server = tls ? createHttpsServer(tls, handler) : createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanups.push(() => server.close());
  return `${tls ? 'https://web.localhost' : 'http://127.0.0.1'}:${server.address().port}`;
}

async function selfSignedCertificate() {
  const [key, cert] = [join(tmp, 'key.pem'), join(tmp, 'cert.pem')];
  await promisify(execFile)('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=web.localhost',
    '-addext', 'subjectAltName=DNS:web.localhost']);
  return { key: await readFile(key), cert: await readFile(cert) };
}

function pkce() {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

function authorizationUrl(op, { redirectUri, challenge, state, nonce, scope = 'openid email profile groups' }) {
  const url = new URL(op.discovery.authorization_endpoint);
  url.search = new URLSearchParams({
    client_id: CLIENT.id, response_type: 'code', scope, redirect_uri: redirectUri, state, nonce,
    ...(challenge && { code_challenge: challenge, code_challenge_method: 'S256' }),
  });
  return url.href;
}

// A POST authenticated with client_secret_basic; resolves to {status, body}.
async function clientPost(url, params) {
  const basic = Buffer.from(`${encodeURIComponent(CLIENT.id)}:${encodeURIComponent(CLIENT.secret)}`).toString('base64');
  const response = await fetch(url, {
    method: 'POST',
    headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(params),
  });
  return { status: response.status, body: await response.json() };
}

async function verifyIdToken(op, idToken, nonce) {
  assertEqual(decodeProtectedHeader(idToken).alg, 'RS256', 'ID token alg');
  const { payload } = await jwtVerify(idToken, op.jwks, { issuer: op.issuer, audience: CLIENT.id });
  if (nonce) assertEqual(payload.nonce, nonce, 'nonce');
  return payload;
}

function admin(op, method, path, body, token = ADMIN) {
  return fetch(`${op.issuer}/_admin/users${path}`, {
    method,
    headers: { ...(token && { authorization: `Bearer ${token}` }), 'content-type': 'application/json' },
    body: body && JSON.stringify(body),
  });
}

function tamper(op, method, body, token = ADMIN) {
  return fetch(`${op.issuer}/_admin/tamper`, {
    method,
    headers: { ...(token && { authorization: `Bearer ${token}` }), 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : body && JSON.stringify(body),
  });
}

// A tampered ID token keeps the provider's header: its key's kid, RS256.
function assertHeader(idToken, kid) {
  const header = decodeProtectedHeader(idToken);
  assertEqual([header.alg, header.kid, Object.keys(header).sort()], ['RS256', kid, ['alg', 'kid']], 'header');
}

// Resolves to the error promise rejects with, asserting its jose error code.
async function rejection(promise, code, what) {
  const err = await promise.then(() => undefined, (e) => e);
  assert(err, `${what}: accepted`);
  assertEqual(err.code, code, `${what}: error code (${err.message})`);
  return err;
}

async function userinfo(op, accessToken) {
  const response = await fetch(op.discovery.userinfo_endpoint, { headers: { authorization: `Bearer ${accessToken}` } });
  assertEqual(response.status, 200, 'userinfo status');
  return response.json();
}

// A code flow through drive.mjs to a CLI-style loopback listener.
async function codeFlow(op, callbacks, callbackBase, credentials = ALICE, driveArgs = ['--follow']) {
  const { verifier, challenge } = pkce();
  const state = randomBytes(8).toString('hex');
  const nonce = randomBytes(8).toString('hex');
  const redirectUri = `${callbackBase}/callback`;
  const url = authorizationUrl(op, { redirectUri, challenge, state, nonce });
  const run = await runNode('drive.mjs', ['code', '--url', url, '--username', credentials.username,
    '--password', credentials.password, ...driveArgs]);
  return { run, state, nonce, verifier, redirectUri, received: callbacks.get(state) };
}

async function exchange(op, flow) {
  const { status, body } = await clientPost(op.discovery.token_endpoint, {
    grant_type: 'authorization_code', code: flow.received.get('code'),
    redirect_uri: flow.redirectUri, code_verifier: flow.verifier,
  });
  assertEqual(status, 200, `token endpoint status (${JSON.stringify(body)})`);
  return body;
}

const refresh = (op, refreshToken) => clientPost(op.discovery.token_endpoint, {
  grant_type: 'refresh_token', refresh_token: refreshToken,
});

try {
  // The web app for the browser check comes first: the provider must know its
  // HTTPS redirect URI (only http loopback ones match any port).
  let op;
  const pending = new Map();
  // Sign-ins with the web app's own form (to be left alone by browser.mjs).
  let localLogins = 0;
  const rp = await listen(async (req, res) => {
    const url = new URL(req.url, 'https://x');
    if (url.pathname === '/' || (url.pathname === '/sso' && req.method === 'POST')) {
      const { verifier, challenge } = pkce();
      const state = randomBytes(8).toString('hex');
      const nonce = randomBytes(8).toString('hex');
      pending.set(state, { verifier, nonce });
      res.writeHead(url.pathname === '/' ? 302 : 303, { location: authorizationUrl(op, { redirectUri: `${rp}/callback`, challenge, state, nonce }) });
      res.end();
      return;
    }
    if (url.pathname === '/portal') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<h1>Portal</h1><p><a href="/login">Go to login</a></p>');
      return;
    }
    if (url.pathname === '/login') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(`<h1>Web app login</h1>
<form method="post" action="/local"><label>Email <input type="email" name="email"></label>
<label>Password <input type="password" name="password"></label><button type="submit">Sign in</button></form>
<form method="post" action="/sso"><button type="submit">Sign in with TestOP</button></form>`);
      return;
    }
    if (url.pathname === '/local') {
      localLogins += 1;
      res.writeHead(401);
      res.end('local login');
      return;
    }
    const login = pending.get(url.searchParams.get('state'));
    try {
      assert(url.pathname === '/callback' && login, 'unexpected request');
      const { body } = await clientPost(op.discovery.token_endpoint, {
        grant_type: 'authorization_code', code: url.searchParams.get('code'),
        redirect_uri: `${rp}/callback`, code_verifier: login.verifier,
      });
      const claims = await verifyIdToken(op, body.id_token, login.nonce);
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(`<h1>Welcome, ${claims.name} (${claims.email})</h1><p>groups: ${claims.groups.join(', ')}</p>`);
    } catch (err) {
      res.writeHead(500);
      res.end(err.message);
    }
  }, await selfSignedCertificate());

  op = await startProvider('main', {}, [`${rp}/callback`]);

  // The CLI's loopback listener: remembers each callback's query by state.
  const callbacks = new Map();
  const cli = await listen((req, res) => {
    const query = new URL(req.url, 'http://x').searchParams;
    callbacks.set(query.get('state'), query);
    res.end('You can close this window.');
  });

  await check('discovery: exact issuer, S256 PKCE, device endpoint', () => {
    assert(/^http:\/\/127\.0\.0\.1:\d+$/.test(op.issuer), `issuer ${op.issuer}`);
    assertEqual(op.discovery.issuer, op.issuer, 'discovery issuer');
    assertEqual(op.discovery.code_challenge_methods_supported, ['S256'], 'PKCE methods');
    assertEqual(op.discovery.device_authorization_endpoint, `${op.issuer}/device/auth`, 'device endpoint');
  });

  let tokens;
  let flow;
  await check('code flow: login form, loopback redirect on a random port', async () => {
    flow = await codeFlow(op, callbacks, cli);
    assertEqual(flow.run.code, 0, `drive.mjs exit (${flow.run.stderr.trim()})`);
    const [final, status] = flow.run.stdout.trim().split('\n');
    assert(final.startsWith(`${cli}/callback?`), `final URL ${final}`);
    assertEqual(status, '200', 'callback status');
    assert(flow.received?.get('code'), 'the listener got no code');
    assertEqual(flow.received.get('iss'), op.issuer, 'iss parameter');
  });

  await check('token exchange: verified ID token with email and path groups', async () => {
    tokens = await exchange(op, flow);
    const claims = await verifyIdToken(op, tokens.id_token, flow.nonce);
    assertEqual(claims.sub, ALICE.sub, 'sub');
    assertEqual(claims.email, ALICE.email, 'email');
    assertEqual(claims.email_verified, true, 'email_verified');
    assertEqual(claims.name, ALICE.name, 'name');
    assertEqual(claims.groups, ALICE.groups, 'groups');
    assert(tokens.refresh_token, 'no refresh token without offline_access');
  });

  await check('userinfo: email and groups', async () => {
    const info = await userinfo(op, tokens.access_token);
    assertEqual([info.email, info.groups], [ALICE.email, ALICE.groups], 'userinfo');
  });

  await check('admin API: 401 without the token, lists users with it', async () => {
    assertEqual((await admin(op, 'GET', '', undefined, null)).status, 401, 'no token');
    assertEqual((await admin(op, 'PUT', '/u1', { groups: [] }, 'wrong')).status, 401, 'wrong token');
    const list = await (await admin(op, 'GET', '')).json();
    assertEqual(list.map((u) => u.sub), ['u1'], 'users');
  });

  let spent;
  await check('refresh: new ID token with the current groups, rotated refresh token', async () => {
    assertEqual((await admin(op, 'PUT', '/u1', { groups: ['ops', '/tenant-b/x'] })).status, 200, 'admin PUT');
    const { status, body } = await refresh(op, tokens.refresh_token);
    assertEqual(status, 200, `refresh status (${JSON.stringify(body)})`);
    const claims = await verifyIdToken(op, body.id_token, flow.nonce);
    assertEqual(claims.groups, ['ops', '/tenant-b/x'], 'groups after refresh');
    assert(body.refresh_token && body.refresh_token !== tokens.refresh_token, 'the refresh token was not rotated');
    spent = tokens.refresh_token;
    tokens = body;
  });

  await check('refresh: invalid_grant while the user is disabled, fine again once enabled', async () => {
    assertEqual((await admin(op, 'PUT', '/u1', { disabled: true })).status, 200, 'admin PUT');
    const refused = await refresh(op, tokens.refresh_token);
    assertEqual([refused.status, refused.body.error], [400, 'invalid_grant'], 'refresh while disabled');
    assertEqual((await admin(op, 'PUT', '/u1', { disabled: false })).status, 200, 'admin PUT');
    const { status, body } = await refresh(op, tokens.refresh_token);
    assertEqual(status, 200, `refresh once enabled (${JSON.stringify(body)})`);
    tokens = body;
  });

  await check('refresh: invalid_grant once the user is deleted', async () => {
    assertEqual((await admin(op, 'DELETE', '/u1')).status, 204, 'admin DELETE');
    const { status, body } = await refresh(op, tokens.refresh_token);
    assertEqual([status, body.error], [400, 'invalid_grant'], 'refresh response');
    assertEqual((await admin(op, 'PUT', '/u1', ALICE)).status, 200, 'admin PUT');
  });

  await check('refresh: a spent refresh token is refused', async () => {
    const { status, body } = await refresh(op, spent);
    assertEqual([status, body.error], [400, 'invalid_grant'], 'refresh response');
  });

  await check('login: a disabled user is refused (exit 3)', async () => {
    assertEqual((await admin(op, 'PUT', '/u1', { disabled: true })).status, 200, 'admin PUT');
    const { run } = await codeFlow(op, callbacks, cli);
    assertEqual(run.code, 3, 'drive.mjs exit');
    assert(run.stderr.includes('disabled'), `stderr: ${run.stderr}`);
    assertEqual((await admin(op, 'PUT', '/u1', { disabled: false })).status, 200, 'admin PUT');
  });

  await check('login: a wrong password is refused (exit 3)', async () => {
    const { run, received } = await codeFlow(op, callbacks, cli, { ...ALICE, password: 'nope' });
    assertEqual(run.code, 3, 'drive.mjs exit');
    assert(run.stderr.includes('Invalid username or password'), `stderr: ${run.stderr}`);
    assert(!received, 'the listener got a callback');
  });

  await check('authorization: PKCE is required', async () => {
    const state = randomBytes(8).toString('hex');
    const url = authorizationUrl(op, { redirectUri: `${cli}/callback`, state, nonce: 'n' });
    const run = await runNode('drive.mjs', ['code', '--url', url, '--username', 'alice', '--password', 'pw']);
    assertEqual(run.code, 0, `drive.mjs exit (${run.stderr.trim()})`);
    const final = new URL(run.stdout.trim());
    assertEqual([final.searchParams.get('error'), final.searchParams.get('code')], ['invalid_request', null], 'callback');
  });

  await check('authorization: an unregistered loopback path is refused', async () => {
    const url = authorizationUrl(op, { redirectUri: `${cli}/other`, ...pkce(), state: 's', nonce: 'n' });
    const run = await runNode('drive.mjs', ['code', '--url', url, '--username', 'alice', '--password', 'pw']);
    assertEqual(run.code, 1, 'drive.mjs exit');
    assert(run.stderr.includes('redirect_uri'), `stderr: ${run.stderr}`);
  });

  await check('drive.mjs --state-override: the callback gets the forged state, the rest unchanged', async () => {
    const forged = `forged ${randomBytes(4).toString('hex')}&x`;
    const followed = await codeFlow(op, callbacks, cli, ALICE, ['--follow', '--state-override', forged]);
    assertEqual(followed.run.code, 0, `drive.mjs exit (${followed.run.stderr.trim()})`);
    const [final, status] = followed.run.stdout.trim().split('\n');
    assertEqual(new URL(final).searchParams.getAll('state'), [forged], 'printed state');
    assertEqual(status, '200', 'callback status');
    assert(!followed.received, 'the listener got the real state');
    const received = callbacks.get(forged);
    assert(received?.get('code'), 'the listener got no code with the forged state');
    assertEqual(received.get('iss'), op.issuer, 'iss parameter');

    // Without --follow only printed; the code in it is still good.
    const printed = await codeFlow(op, callbacks, cli, ALICE, ['--state-override', 'printed-only']);
    assertEqual(printed.run.code, 0, `drive.mjs exit (${printed.run.stderr.trim()})`);
    const lines = printed.run.stdout.trim().split('\n');
    assertEqual(lines.length, 1, 'lines printed');
    const url = new URL(lines[0]);
    assert(url.href.startsWith(`${cli}/callback?`), `final URL ${url.href}`);
    assertEqual([url.searchParams.get('state'), url.searchParams.get('iss')], ['printed-only', op.issuer], 'state, iss');
    assert(!callbacks.has('printed-only') && !printed.received, 'the listener got a callback without --follow');
    const body = await exchange(op, { ...printed, received: url.searchParams });
    await verifyIdToken(op, body.id_token, printed.nonce);
  });

  await check('device flow: user code, login, confirm, polling', async () => {
    const { status, body: device } = await clientPost(op.discovery.device_authorization_endpoint, {
      client_id: CLIENT.id, scope: 'openid email profile groups',
    });
    assertEqual(status, 200, `device authorization (${JSON.stringify(device)})`);
    assertEqual(device.verification_uri, `${op.issuer}/device`, 'verification_uri');
    assertEqual(device.interval, 1, 'interval');
    const poll = () => clientPost(op.discovery.token_endpoint, {
      grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: device.device_code,
    });
    assertEqual((await poll()).body.error, 'authorization_pending', 'before the user');
    const run = await runNode('drive.mjs', ['device', '--uri', device.verification_uri, '--code', device.user_code,
      '--username', 'alice', '--password', 'pw']);
    assertEqual([run.code, run.stdout.trim()], [0, 'ok'], `drive.mjs (${run.stderr.trim()})`);
    let result;
    for (let i = 0; i < 10 && !(result?.status === 200); i += 1) {
      await new Promise((r) => { setTimeout(r, device.interval * 1000); });
      result = await poll();
    }
    assertEqual(result.status, 200, `device token (${JSON.stringify(result.body)})`);
    const claims = await verifyIdToken(op, result.body.id_token);
    assertEqual([claims.email, claims.groups], [ALICE.email, ALICE.groups], 'claims');
    assert(result.body.refresh_token, 'no refresh token');
  });

  await check('device flow: a wrong user code is refused', async () => {
    const run = await runNode('drive.mjs', ['device', '--uri', `${op.issuer}/device`, '--code', 'BCDF-GHJK',
      '--username', 'alice', '--password', 'pw']);
    assertEqual(run.code, 1, 'drive.mjs exit');
    assert(run.stderr.includes('user code rejected'), `stderr: ${run.stderr}`);
  });

  const rsaKid = (await (await fetch(op.discovery.jwks_uri)).json()).keys.find((k) => k.alg === 'RS256').kid;

  await check('tamper admin API: 401 without the token, 400 on bad input, GET, DELETE', async () => {
    assertEqual((await tamper(op, 'PUT', { idToken: { aud: 'x' } }, null)).status, 401, 'no token');
    assertEqual((await tamper(op, 'GET', undefined, 'wrong')).status, 401, 'wrong token');
    for (const bad of ['{', [], { accessToken: { aud: 'x' } }, { idToken: {} }, { idToken: 'aud' },
      { idToken: { expOffset: '-120' } }, { idToken: { sign: 'mine' } }]) {
      assertEqual((await tamper(op, 'PUT', bad)).status, 400, `PUT ${JSON.stringify(bad)}`);
    }
    assertEqual(await (await tamper(op, 'GET')).json(), { pending: null }, 'nothing pending after bad input');
    const response = await tamper(op, 'PUT', { idToken: { aud: 'someone-else' } });
    assertEqual([response.status, await response.json()], [200, { pending: { idToken: { aud: 'someone-else' } } }], 'PUT');
    assertEqual(await (await tamper(op, 'GET')).json(), { pending: { idToken: { aud: 'someone-else' } } }, 'GET');
    assertEqual((await tamper(op, 'DELETE')).status, 204, 'DELETE');
    assertEqual(await (await tamper(op, 'GET')).json(), { pending: null }, 'GET after DELETE');
    const cleared = await codeFlow(op, callbacks, cli);
    assertEqual(cleared.run.code, 0, `drive.mjs exit (${cleared.run.stderr.trim()})`);
    await verifyIdToken(op, (await exchange(op, cleared)).id_token, cleared.nonce);
  });

  // Each tamper on one token response of this login; the next one is clean again.
  let tflow;
  let ttokens;
  await check('tamper aud: the code exchange gets a correctly signed ID token for someone else, once', async () => {
    tflow = await codeFlow(op, callbacks, cli);
    assertEqual(tflow.run.code, 0, `drive.mjs exit (${tflow.run.stderr.trim()})`);
    assertEqual((await tamper(op, 'PUT', { idToken: { aud: 'someone-else' } })).status, 200, 'PUT');
    ttokens = await exchange(op, tflow);
    assertHeader(ttokens.id_token, rsaKid);
    const err = await rejection(verifyIdToken(op, ttokens.id_token, tflow.nonce), 'ERR_JWT_CLAIM_VALIDATION_FAILED', 'verify');
    assertEqual(err.claim, 'aud', 'refused claim');
    const { payload } = await jwtVerify(ttokens.id_token, op.jwks, { issuer: op.issuer });
    assertEqual([payload.aud, payload.sub, payload.nonce, payload.email], ['someone-else', ALICE.sub, tflow.nonce, ALICE.email], 'claims');
    assertEqual((await userinfo(op, ttokens.access_token)).email, ALICE.email, 'userinfo with the access token');
    assertEqual(await (await tamper(op, 'GET')).json(), { pending: null }, 'pending after use');
    const { status, body } = await refresh(op, ttokens.refresh_token);
    assertEqual(status, 200, `refresh (${JSON.stringify(body)})`);
    await verifyIdToken(op, body.id_token, tflow.nonce);
    ttokens = body;
  });

  // A refresh with tamper; resolves to the refresh response's body.
  const tamperedRefresh = async (idToken) => {
    assertEqual((await tamper(op, 'PUT', { idToken })).status, 200, 'PUT');
    const { status, body } = await refresh(op, ttokens.refresh_token);
    assertEqual(status, 200, `refresh (${JSON.stringify(body)})`);
    ttokens = body;
    return body;
  };

  await check('tamper iss: a refresh gets a correctly signed ID token from another issuer', async () => {
    const { id_token: idToken } = await tamperedRefresh({ iss: 'http://evil.example' });
    const err = await rejection(verifyIdToken(op, idToken, tflow.nonce), 'ERR_JWT_CLAIM_VALIDATION_FAILED', 'verify');
    assertEqual(err.claim, 'iss', 'refused claim');
    const { payload } = await jwtVerify(idToken, op.jwks, { audience: CLIENT.id });
    assertEqual([payload.iss, payload.sub], ['http://evil.example', ALICE.sub], 'claims');
  });

  await check('tamper nonce: a refresh gets a correctly signed ID token with a wrong nonce', async () => {
    const { id_token: idToken } = await tamperedRefresh({ nonce: 'wrong' });
    const payload = await verifyIdToken(op, idToken);
    assertEqual([payload.nonce, payload.sub], ['wrong', ALICE.sub], 'claims');
  });

  await check('tamper expOffset: a refresh gets an ID token expired 2 minutes ago', async () => {
    const { id_token: idToken } = await tamperedRefresh({ expOffset: -120 });
    await rejection(verifyIdToken(op, idToken, tflow.nonce), 'ERR_JWT_EXPIRED', 'verify');
    const { exp, iat } = decodeJwt(idToken);
    const now = Math.floor(Date.now() / 1000);
    assert(Math.abs(exp - (now - 120)) <= 5 && iat === exp - 60, `exp ${exp}, iat ${iat}, now ${now}`);
    // Valid in every other respect: verified as of before it expired.
    await jwtVerify(idToken, op.jwks, { issuer: op.issuer, audience: CLIENT.id, currentDate: new Date((exp - 30) * 1000) });
  });

  await check('tamper sign: a refresh gets an ID token signed with a key not in the JWKS, under its kid', async () => {
    const { id_token: idToken } = await tamperedRefresh({ sign: 'other-key' });
    assertHeader(idToken, rsaKid);
    await rejection(verifyIdToken(op, idToken, tflow.nonce), 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED', 'verify');
    const payload = decodeJwt(idToken);
    assertEqual([payload.iss, payload.aud, payload.sub, payload.nonce], [op.issuer, CLIENT.id, ALICE.sub, tflow.nonce], 'claims');
    const { status, body } = await refresh(op, ttokens.refresh_token);
    assertEqual(status, 200, `refresh afterwards (${JSON.stringify(body)})`);
    await verifyIdToken(op, body.id_token, tflow.nonce);
  });

  await check('tamper: the device-code grant, not used up by authorization_pending', async () => {
    const { body: device } = await clientPost(op.discovery.device_authorization_endpoint, {
      client_id: CLIENT.id, scope: 'openid email profile groups',
    });
    const poll = () => clientPost(op.discovery.token_endpoint, {
      grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: device.device_code,
    });
    assertEqual((await tamper(op, 'PUT', { idToken: { aud: 'someone-else' } })).status, 200, 'PUT');
    assertEqual((await poll()).body.error, 'authorization_pending', 'before the user');
    assertEqual((await (await tamper(op, 'GET')).json()).pending?.idToken, { aud: 'someone-else' }, 'still pending');
    const run = await runNode('drive.mjs', ['device', '--uri', device.verification_uri, '--code', device.user_code,
      '--username', 'alice', '--password', 'pw']);
    assertEqual([run.code, run.stdout.trim()], [0, 'ok'], `drive.mjs (${run.stderr.trim()})`);
    let result;
    for (let i = 0; i < 10 && !(result?.status === 200); i += 1) {
      await new Promise((r) => { setTimeout(r, device.interval * 1000); });
      result = await poll();
    }
    assertEqual(result.status, 200, `device token (${JSON.stringify(result.body)})`);
    const err = await rejection(verifyIdToken(op, result.body.id_token), 'ERR_JWT_CLAIM_VALIDATION_FAILED', 'verify');
    assertEqual(err.claim, 'aud', 'refused claim');
    assertEqual(await (await tamper(op, 'GET')).json(), { pending: null }, 'pending after use');
  });

  await check('groupsInIdToken=false: groups only from userinfo', async () => {
    const op2 = await startProvider('no-groups', { groupsInIdToken: false });
    const flow2 = await codeFlow(op2, callbacks, cli);
    assertEqual(flow2.run.code, 0, `drive.mjs exit (${flow2.run.stderr.trim()})`);
    const tokens2 = await exchange(op2, flow2);
    const claims = await verifyIdToken(op2, tokens2.id_token, flow2.nonce);
    assertEqual([claims.email, 'groups' in claims], [ALICE.email, false], 'ID token email, has groups');
    assertEqual((await userinfo(op2, tokens2.access_token)).groups, ALICE.groups, 'userinfo groups');
  });

  await check('browser: Chromium signs alice in to an HTTPS web.localhost app', async () => {
    const run = await runNode('browser.mjs', ['--url', `${rp}/`, '--username', 'alice', '--password', 'pw',
      '--expect-text', 'Welcome, Alice (alice@example.com)', '--insecure'], 60_000);
    assertEqual(run.code, 0, `browser.mjs exit (${run.stderr.trim()})`);
    const page = JSON.parse(run.stdout);
    assertEqual(page.status, 200, 'status');
    assert(page.url.startsWith(`${rp}/callback?`), `url ${page.url}`);
    assert(page.text.includes('groups: devs, /tenant-a/root/admins'), `text ${page.text}`);
  });

  await check('browser --click: a link, then "Sign in with" on the app\'s own email/password page', async () => {
    const run = await runNode('browser.mjs', ['--url', `${rp}/portal`, '--click', 'Sign in with TestOP',
      '--click', 'Go to login', '--username', 'alice', '--password', 'pw',
      '--expect-text', 'Welcome, Alice (alice@example.com)', '--insecure'], 60_000);
    assertEqual(run.code, 0, `browser.mjs exit (${run.stderr.trim()})`);
    const page = JSON.parse(run.stdout);
    assertEqual(page.status, 200, 'status');
    assert(page.url.startsWith(`${rp}/callback?`), `url ${page.url}`);
    assertEqual(localLogins, 0, 'posts to the app\'s own login form');
  });

  await check('browser: the app\'s own email/password form is not the provider\'s', async () => {
    const run = await runNode('browser.mjs', ['--url', `${rp}/login`, '--click', 'Sign in with Nobody',
      '--username', 'alice', '--password', 'pw', '--insecure'], 60_000);
    assertEqual(run.code, 0, `browser.mjs exit (${run.stderr.trim()})`);
    const page = JSON.parse(run.stdout);
    assertEqual([page.url, page.status], [`${rp}/login`, 200], 'url, status');
    assert(page.text.includes('Sign in with TestOP'), `text ${page.text}`);
    assertEqual(localLogins, 0, 'posts to the app\'s own login form');
  });

  if (failures) console.log(`--- provider log ---\n${op.log()}`);
} catch (err) {
  failures += 1;
  console.log(`FAIL setup: ${err.stack}`);
} finally {
  for (const cleanup of cleanups.reverse()) await cleanup();
}

console.log(`${passes} passed, ${failures} failed`);
process.exitCode = failures ? 1 : 0;
