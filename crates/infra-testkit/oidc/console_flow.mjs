// An admin's work in the web console, in a real browser (the system
// Chromium, headless), the way a person does it: sign in, add a user, add
// a group and put the user in it, grant the group a role on a destination,
// read who can reach that destination, watch the audit page pick up a new
// event by itself, then sign in as the new user and read *My access*.
//
//   node console_flow.mjs --url BASE --admin EMAIL --password P
//        --user EMAIL --user-password P --group NAME --destination NAME --role ROLE
//        [--insecure]
//
// Prints one JSON object with the text each step left on the page:
// {"userAdded", "memberAdded", "granted", "whoCanReach", "userPage",
//  "followed": bool, "auditText", "myAccess"}. Exit codes: 0 done (the
// caller judges the texts), 3 a sign-in was refused, 1 any other failure,
// 2 usage.
import { parseArgs } from 'node:util';

import { chromium } from 'playwright-core';

const { values: v } = parseArgs({
  options: {
    url: { type: 'string' },
    admin: { type: 'string' },
    password: { type: 'string' },
    user: { type: 'string' },
    'user-password': { type: 'string' },
    group: { type: 'string' },
    destination: { type: 'string' },
    role: { type: 'string' },
    insecure: { type: 'boolean', default: false },
  },
});
for (const k of ['url', 'admin', 'password', 'user', 'user-password', 'group', 'destination', 'role']) {
  if (!v[k]) {
    console.error(`usage: console_flow.mjs: --${k} is required`);
    process.exit(2);
  }
}
const base = v.url.replace(/\/$/, '');
const executablePath = process.env.INFRA_CHROMIUM || '/usr/bin/chromium';
const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });

// Clicks `selector` and waits for the page it loads.
const submit = async (page, selector) => {
  await Promise.all([page.waitForNavigation(), page.click(selector)]);
};

const signIn = async (email, password) => {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: v.insecure, viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  await page.goto(base + '/console');
  await page.fill('input[name=email]', email);
  await page.fill('input[name=password]', password);
  await submit(page, 'form [type=submit]');
  if (!new URL(page.url()).pathname.startsWith('/console')) {
    console.error(`sign-in refused for ${email}: ${page.url()}: ${(await page.innerText('body')).slice(0, 500)}`);
    process.exit(3);
  }
  return { ctx, page };
};

try {
  const out = {};
  const { ctx, page } = await signIn(v.admin, v.password);
  const main = async () => (await page.innerText('main')).slice(0, 4000);

  // A user, with a password of the admin's choosing.
  await page.goto(base + '/console/users');
  await page.click('summary:has-text("Add a user")');
  await page.fill('#new-email', v.user);
  await page.fill('#new-password', v['user-password']);
  await submit(page, 'button:has-text("Add user")');
  out.userAdded = await main();

  // A group, and the user in it.
  await page.goto(base + '/console/groups');
  await page.click('summary:has-text("Add a group")');
  await page.fill('#new-group', v.group);
  await submit(page, 'button:has-text("Add group")');
  await page.fill('#member-email', v.user);
  await submit(page, 'form.row button:has-text("Add")');
  out.memberAdded = await main();

  // A grant to the group, from the group's page, ending in eight hours.
  await submit(page, 'a:has-text("Grant this group access")');
  await page.fill('#g-role', v.role);
  await page.fill('#g-resource', v.destination);
  await page.fill('#g-expires', '8h');
  await submit(page, 'button:has-text("Grant")');
  out.granted = await main();

  await page.goto(`${base}/console/destinations/${encodeURIComponent(v.destination)}`);
  out.whoCanReach = await main();
  await page.goto(`${base}/console/users/${encodeURIComponent(v.user)}`);
  out.userPage = await main();

  // The audit page follows: an event made elsewhere appears without a reload.
  await page.goto(base + '/console/audit');
  await page.waitForSelector('#follow:not([hidden])');
  const other = await ctx.newPage();
  await other.goto(base + '/console/groups');
  await other.click('summary:has-text("Add a group")');
  await other.fill('#new-group', `${v.group}-late`);
  await submit(other, 'button:has-text("Add group")');
  try {
    await page.waitForSelector(`#events tr.new:has-text("${v.group}-late")`, { timeout: 15000 });
    out.followed = true;
  } catch {
    out.followed = false;
  }
  out.auditText = await main();
  await ctx.close();

  const u = await signIn(v.user, v['user-password']);
  out.myAccess = (await u.page.innerText('main')).slice(0, 4000);
  await u.ctx.close();
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
}
