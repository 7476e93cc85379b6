// The console's recording player in a real browser (the system Chromium,
// headless): signs in, opens a recording's page, waits until the player's
// terminal shows WAIT (a running session is followed as it goes), then
// seeks to the end and to the start, and checks the page with axe-core.
//
//   node console_player.mjs --url BASE --username U --password P --path PATH
//                           --wait TEXT [--first TEXT] [--screenshot FILE] [--insecure]
//
// With --first, it first waits for that text and then writes "loaded" on
// stderr: the caller then makes WAIT happen, and the page must follow.
//
// Prints {"shown", "atEnd", "atStart", "clock", "status", "violations"}.
// Exit codes: 0 done, 4 WAIT never appeared (the screen is printed), 1 any
// other failure, 2 usage.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';

import { chromium } from 'playwright-core';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    username: { type: 'string' },
    password: { type: 'string' },
    path: { type: 'string' },
    wait: { type: 'string' },
    first: { type: 'string' },
    screenshot: { type: 'string' },
    insecure: { type: 'boolean', default: false },
  },
});
if (!values.url || !values.username || !values.password || !values.path || !values.wait) {
  console.error('usage: console_player.mjs --url BASE --username U --password P --path PATH --wait TEXT');
  process.exit(2);
}
const base = values.url.replace(/\/$/, '');
const axeSource = await readFile(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const executablePath = process.env.INFRA_CHROMIUM || '/usr/bin/chromium';
const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
try {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: values.insecure, bypassCSP: true, viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  await page.goto(base + '/console');
  await page.fill('input[name=email]', values.username);
  await page.fill('input[name=password]', values.password);
  await Promise.all([page.waitForNavigation(), page.click('form [type=submit]')]);
  await page.goto(base + values.path);
  const screen = () => page.evaluate(() => document.getElementById('screen').textContent);
  if (values.first) {
    // The page shows what there is; the caller adds more once told.
    await page.waitForFunction((w) => document.getElementById('screen').textContent.includes(w), values.first, { timeout: 30000 });
    console.error('loaded');
  }
  try {
    await page.waitForFunction((w) => document.getElementById('screen').textContent.includes(w), values.wait, { timeout: 30000 });
  } catch {
    console.log(JSON.stringify({ shown: await screen() }));
    process.exit(4);
  }
  const shown = await screen();
  // Stop following or playing, then move by hand.
  if ((await page.textContent('#play')) === 'Pause') await page.click('#play');
  const seekTo = (where) => page.evaluate((where) => {
    const s = document.getElementById('seek');
    s.value = where === 'end' ? s.max : '0';
    s.dispatchEvent(new Event('input'));
  }, where);
  await seekTo('end');
  const atEnd = await screen();
  const clock = await page.evaluate(() => document.getElementById('clock').textContent);
  const status = await page.evaluate(() => document.getElementById('player-status').textContent);
  if (values.screenshot) await page.screenshot({ path: values.screenshot, fullPage: true });
  await seekTo('start');
  const atStart = await screen();
  await page.evaluate(axeSource);
  const result = await page.evaluate(() =>
    window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } }),
  );
  const violations = result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')) }));
  console.log(JSON.stringify({ shown, atEnd, atStart, clock, status, violations }));
  await ctx.close();
} finally {
  await browser.close();
}
