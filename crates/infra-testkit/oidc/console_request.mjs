// Just-in-time access in the web console, in a real browser (the system
// Chromium, headless): a user asks for a role from the portal, a reviewer
// approves it from the console, and the user's portal shows the
// destination.
//
//   node console_request.mjs --url BASE --requester EMAIL --reviewer EMAIL --password P
//        --destination NAME --role ROLE [--insecure]
//
// Both sign in with password P. Prints one JSON object with what each
// step left on the page: {"offered", "asked", "reviewQueue", "reviewPage",
// "approved", "portalAfter"}. Exit codes: 0 done (the caller judges the
// texts), 3 a sign-in was refused, 1 any other failure, 2 usage.
import { parseArgs } from 'node:util';

import { chromium } from 'playwright-core';

const { values: v } = parseArgs({
  options: {
    url: { type: 'string' },
    requester: { type: 'string' },
    reviewer: { type: 'string' },
    password: { type: 'string' },
    destination: { type: 'string' },
    role: { type: 'string' },
    insecure: { type: 'boolean', default: false },
  },
});
for (const k of ['url', 'requester', 'reviewer', 'password', 'destination', 'role']) {
  if (!v[k]) {
    console.error(`usage: console_request.mjs: --${k} is required`);
    process.exit(2);
  }
}
const base = v.url.replace(/\/$/, '');
const browser = await chromium.launch({ executablePath: process.env.INFRA_CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });

const submit = async (page, selector) => {
  await Promise.all([page.waitForNavigation(), page.click(selector)]);
};
const signIn = async (email) => {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: v.insecure, viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  await page.goto(base + '/console');
  await page.fill('input[name=email]', email);
  await page.fill('input[name=password]', v.password);
  await submit(page, 'form [type=submit]');
  if (!new URL(page.url()).pathname.startsWith('/console')) {
    console.error(`sign-in refused for ${email}: ${page.url()}`);
    process.exit(3);
  }
  return { ctx, page };
};
const main = async (page) => (await page.innerText('main')).slice(0, 4000);

try {
  const out = {};
  const asker = await signIn(v.requester);
  out.offered = await main(asker.page);
  await submit(asker.page, 'a:has-text("Request access")');
  await asker.page.fill('#r-resources', v.destination);
  await asker.page.fill('#r-role', v.role);
  await asker.page.fill('#r-for', '1h');
  await asker.page.fill('#r-reason', 'INC-77 from the browser');
  await submit(asker.page, 'button:has-text("Ask")');
  out.asked = await main(asker.page);

  const reviewer = await signIn(v.reviewer);
  await reviewer.page.goto(base + '/console/requests');
  out.reviewQueue = await main(reviewer.page);
  await submit(reviewer.page, `table a:has-text("${v.role} on ${v.destination}")`);
  out.reviewPage = await main(reviewer.page);
  await reviewer.page.fill('#v-reason', 'ok from the console');
  await submit(reviewer.page, 'button:has-text("Approve")');
  out.approved = await main(reviewer.page);
  await reviewer.ctx.close();

  await asker.page.goto(base + '/console');
  out.portalAfter = await main(asker.page);
  await asker.ctx.close();
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
}
