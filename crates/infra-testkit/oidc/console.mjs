// The web console in a real browser (the system Chromium, headless): signs
// in with the console's own form, opens each page, checks it with axe-core,
// and can take screenshots.
//
//   node console.mjs --url BASE --username U --password P --page PATH...
//                    [--public PATH]... [--screenshots DIR] [--sign-out] [--insecure]
//
// For each --page, in a light desktop window: loads BASE+PATH, runs axe-core
// (WCAG 2 A and AA rules), and reports the page's final URL, its innerText
// (the first 4000 characters) and the violations. With --screenshots, also
// saves PATH at desktop and mobile width, light and dark, as
// DIR/<name>-<desktop|mobile>-<light|dark>.png. Each --public PATH is
// checked (and screenshotted) the same way before signing in, such as
// /login. With --sign-out, last presses the page's Sign out button and
// reports where the browser lands ("signedOut": URL). Prints one JSON object
// {"pages": [{"path", "url", "text", "violations": [{"id", "impact",
// "help", "nodes"}]}]}. Exit codes: 0 done (violations are reported, not
// judged), 3 the sign-in was refused, 1 any other failure, 2 usage.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';

import { chromium } from 'playwright-core';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    username: { type: 'string' },
    password: { type: 'string' },
    page: { type: 'string', multiple: true, default: [] },
    public: { type: 'string', multiple: true, default: [] },
    screenshots: { type: 'string' },
    insecure: { type: 'boolean', default: false },
    'sign-out': { type: 'boolean', default: false },
  },
});
if (!values.url || values.username === undefined || values.password === undefined || values.page.length === 0) {
  console.error('usage: console.mjs --url BASE --username U --password P --page PATH... [--screenshots DIR] [--insecure]');
  process.exit(2);
}
const base = values.url.replace(/\/$/, '');
const axeSource = await readFile(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const executablePath = process.env.INFRA_CHROMIUM || '/usr/bin/chromium';

const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
try {
  const signIn = async (opts) => {
    // axe is evaluated through the debugging protocol; the console's CSP
    // forbids any script it did not serve, as it should.
    const ctx = await browser.newContext({ ignoreHTTPSErrors: values.insecure, bypassCSP: true, ...opts });
    const page = await ctx.newPage();
    await page.goto(base + '/console');
    await page.fill('input[name=email]', values.username);
    await page.fill('input[name=password]', values.password);
    await Promise.all([page.waitForNavigation(), page.click('form [type=submit]')]);
    if (!new URL(page.url()).pathname.startsWith('/console')) {
      console.error(`sign-in refused: ${page.url()}: ${(await page.innerText('body')).slice(0, 500)}`);
      process.exit(3);
    }
    return { ctx, page };
  };

  const pages = [];
  const check = async (page, path) => {
    await page.goto(base + path);
    await page.evaluate(axeSource);
    const result = await page.evaluate(() =>
      window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } }),
    );
    pages.push({
      path,
      url: page.url(),
      text: (await page.innerText('body')).slice(0, 4000),
      violations: result.violations.map((v) => ({
        id: v.id,
        impact: v.impact,
        help: v.help,
        nodes: v.nodes.map((n) => n.target.join(' ')),
      })),
    });
  };
  const name = (path) => path.replace(/^\//, '').replace(/[^a-z0-9]+/gi, '-') || 'index';
  {
    const ctx = await browser.newContext({ ignoreHTTPSErrors: values.insecure, bypassCSP: true, viewport: { width: 1280, height: 800 } });
    const page = await ctx.newPage();
    for (const path of values.public) await check(page, path);
    await ctx.close();
  }
  const { ctx, page } = await signIn({ viewport: { width: 1280, height: 800 } });
  for (const path of values.page) await check(page, path);
  let signedOut;
  if (values['sign-out']) {
    await Promise.all([page.waitForNavigation(), page.click('text=Sign out')]);
    signedOut = page.url();
  }
  await ctx.close();

  if (values.screenshots) {
    for (const [width, height, form] of [[1280, 800, 'desktop'], [390, 844, 'mobile']]) {
      for (const colorScheme of ['light', 'dark']) {
        const shoot = async (page, path) => {
          await page.goto(base + path);
          await page.screenshot({ path: `${values.screenshots}/${name(path)}-${form}-${colorScheme}.png`, fullPage: true });
        };
        const anon = await browser.newContext({ ignoreHTTPSErrors: values.insecure, viewport: { width, height }, colorScheme });
        const p = await anon.newPage();
        for (const path of values.public) await shoot(p, path);
        await anon.close();
        const { ctx, page } = await signIn({ viewport: { width, height }, colorScheme });
        for (const path of values.page) await shoot(page, path);
        await ctx.close();
      }
    }
  }
  console.log(JSON.stringify({ pages, signedOut }));
} finally {
  await browser.close();
}
