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

import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';

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
  const [line] = await Promise.race([
    once(createInterface({ input: child.stdout }), 'line'),
    once(child, 'exit').then(([code]) => { throw new Error(`provider exited with ${code}: ${log}`); }),
  ]);
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

async function userinfo(op, accessToken) {
  const response = await fetch(op.discovery.userinfo_endpoint, { headers: { authorization: `Bearer ${accessToken}` } });
  assertEqual(response.status, 200, 'userinfo status');
  return response.json();
}

// A code flow through drive.mjs to a CLI-style loopback listener.
async function codeFlow(op, callbacks, callbackBase, credentials = ALICE) {
  const { verifier, challenge } = pkce();
  const state = randomBytes(8).toString('hex');
  const nonce = randomBytes(8).toString('hex');
  const redirectUri = `${callbackBase}/callback`;
  const url = authorizationUrl(op, { redirectUri, challenge, state, nonce });
  const run = await runNode('drive.mjs', ['code', '--url', url, '--username', credentials.username,
    '--password', credentials.password, '--follow']);
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
  const rp = await listen(async (req, res) => {
    const url = new URL(req.url, 'https://x');
    if (url.pathname === '/') {
      const { verifier, challenge } = pkce();
      const state = randomBytes(8).toString('hex');
      const nonce = randomBytes(8).toString('hex');
      pending.set(state, { verifier, nonce });
      res.writeHead(302, { location: authorizationUrl(op, { redirectUri: `${rp}/callback`, challenge, state, nonce }) });
      res.end();
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

  if (failures) console.log(`--- provider log ---\n${op.log()}`);
} catch (err) {
  failures += 1;
  console.log(`FAIL setup: ${err.stack}`);
} finally {
  for (const cleanup of cleanups.reverse()) await cleanup();
}

console.log(`${passes} passed, ${failures} failed`);
process.exitCode = failures ? 1 : 0;
