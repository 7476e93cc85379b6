// A real browser (the system Chromium, headless) going through a site that
// signs in with provider.mjs.
//
//   node browser.mjs --url URL --username U --password P [--click TEXT]...
//                    [--expect-text TEXT] [--insecure] [--timeout SECONDS]
//                    [--screenshot FILE.png]
//
// Opens URL. Until the provider's login form (the form with an input named
// username) first shows, on each page that loads: if a visible link or button
// whose text (accessible name) contains one of the --click TEXTs is there
// (case-sensitive; TEXTs tried in the order given), clicks it, e.g.
// --click "Sign in with Acme" on a site's own login page, whose email/password
// form is left alone. No clicks after the first login. Whenever the page is
// the provider's login form, fills it in and submits it; waits for the first
// page outside the provider; prints one JSON
// line {"url", "status", "text"} (text: the first 2000 characters of the
// page's innerText). Exit codes: 0 success, 3 the login form rejected the
// credentials, 1 any other failure (including --expect-text not shown), 2 usage.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { chromium } from 'playwright-core';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    username: { type: 'string' },
    password: { type: 'string' },
    'expect-text': { type: 'string' },
    insecure: { type: 'boolean', default: false },
    timeout: { type: 'string', default: '30' },
    screenshot: { type: 'string' },
    click: { type: 'string', multiple: true, default: [] },
  },
});
if (!values.url || values.username === undefined || values.password === undefined) {
  console.error('usage: browser.mjs --url URL --username U --password P [--click TEXT]... [--expect-text TEXT] [--insecure] [--timeout S] [--screenshot FILE]');
  process.exit(2);
}
const timeout = Number(values.timeout) * 1000;

class Failure extends Error {
  constructor(message, code = 1) {
    super(message);
    this.code = code;
  }
}

const userDataDir = await mkdtemp(join(tmpdir(), 'infra-browser-'));
let context;
let page;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    ignoreHTTPSErrors: values.insecure,
    timeout,
  });
  context.setDefaultTimeout(timeout);
  page = context.pages()[0] ?? await context.newPage();

  // The status of the last top-level navigation (after redirects).
  let status;
  page.on('response', (response) => {
    if (response.request().isNavigationRequest() && response.frame() === page.mainFrame()) {
      status = response.status();
    }
  });

  await page.goto(values.url, { waitUntil: 'load' });
  // The provider's form is the one with a username: a site's own login form
  // (email and password) is not it.
  const loginForm = page.locator('input[name=username]');

  // Before the provider's form: the --click links and buttons, one per page load.
  const escape = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const clickable = (text) => {
    const name = new RegExp(escape(text));
    return page.getByRole('link', { name }).or(page.getByRole('button', { name })).filter({ visible: true }).first();
  };
  for (let clicks = 0; values.click.length && await loginForm.count() === 0; clicks += 1) {
    let target;
    for (const text of values.click) {
      if (await clickable(text).count() > 0) {
        target = { text, locator: clickable(text) };
        break;
      }
    }
    if (!target) break;
    if (clicks === 10) throw new Failure(`still clicking after 10 pages (last: ${JSON.stringify(target.text)} on ${page.url()})`);
    await Promise.all([
      page.waitForEvent('framenavigated', (frame) => frame === page.mainFrame())
        .catch(() => { throw new Failure(`clicking ${JSON.stringify(target.text)} on ${page.url()} loaded no page`); }),
      target.locator.click(),
    ]);
    await page.waitForLoadState('load');
  }

  for (let logins = 0; await loginForm.count() > 0; logins += 1) {
    if (logins === 3) throw new Failure('the login form keeps coming back');
    const providerOrigin = new URL(page.url()).origin;
    const form = page.locator('form:has(input[name=username])');
    await form.locator('input[name=username]').fill(values.username);
    await form.locator('input[name=password]').fill(values.password);
    await Promise.all([
      page.waitForEvent('framenavigated', (frame) => frame === page.mainFrame()),
      form.locator('#login').click(),
    ]);
    await page.waitForLoadState('load');
    if (new URL(page.url()).origin === providerOrigin && await loginForm.count() > 0) {
      const message = await page.locator('#error').innerText().catch(() => 'the login form came back');
      throw new Failure(`login rejected: ${message}`, 3);
    }
    await page.waitForURL((url) => url.origin !== providerOrigin, { waitUntil: 'load' });
  }

  const expected = values['expect-text'];
  const found = expected === undefined || await page
    .waitForFunction((text) => document.body?.innerText.includes(text), expected)
    .then(() => true, () => false);
  const text = (await page.evaluate(() => document.body?.innerText ?? '')).slice(0, 2000);
  console.log(JSON.stringify({ url: page.url(), status: status ?? null, text }));
  if (page.url().startsWith('chrome-error:')) throw new Failure(`the page did not load: ${text.split('\n').filter(Boolean).slice(0, 2).join(' ')}`);
  if (!found) throw new Failure(`the page does not show ${JSON.stringify(expected)}`);
} catch (err) {
  console.error(`browser.mjs: ${err.message}`);
  process.exitCode = err instanceof Failure ? err.code : 1;
} finally {
  // Also (above all) when something failed.
  if (values.screenshot && page) await page.screenshot({ path: values.screenshot, fullPage: true }).catch(() => {});
  await context?.close();
  await rm(userDataDir, { recursive: true, force: true });
}
