// A scripted user for provider.mjs's forms: plain HTTP, a cookie jar of its
// own, redirects followed by hand. No browser.
//
//   node drive.mjs code --url AUTHORIZATION_URL --username U --password P [--follow]
//                       [--state-override VALUE]
//     prints the URL the provider finally redirects to (the client's
//     redirect_uri with code and state); with --follow also GETs it and prints
//     the HTTP status on a second line (without it, the URL is only printed).
//     --state-override: the state parameter of that URL replaced with VALUE
//     (added if missing) before it is printed and followed, as a forged
//     callback would be; the other parameters are left as they are.
//   node drive.mjs device --uri VERIFICATION_URI --code USER_CODE --username U --password P
//     enters the user code, signs in and confirms; prints "ok".
//
// Exit codes: 0 success, 3 the login form rejected the credentials (its
// message on stderr), 1 any other failure, 2 usage.
import { parseArgs } from 'node:util';

class Failure extends Error {
  constructor(message, code = 1) {
    super(message);
    this.code = code;
  }
}

// Cookies per origin and path. Stricter than a browser (which ignores ports),
// so the provider's cookies never reach the client's callback listener.
class CookieJar {
  #cookies = new Map();

  store(url, response) {
    for (const header of response.headers.getSetCookie()) {
      const [pair, ...attributes] = header.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      const cookie = { origin: url.origin, name: pair.slice(0, eq), value: pair.slice(eq + 1), path: '/' };
      let expired = false;
      for (const attribute of attributes) {
        const [key, value = ''] = attribute.split('=');
        switch (key.toLowerCase()) {
          case 'path': cookie.path = value; break;
          case 'max-age': expired ||= Number(value) <= 0; break;
          case 'expires': expired ||= Date.parse(value) <= Date.now(); break;
          default: break;
        }
      }
      const key = `${cookie.origin} ${cookie.path} ${cookie.name}`;
      if (expired) this.#cookies.delete(key);
      else this.#cookies.set(key, cookie);
    }
  }

  header(url) {
    const matches = (path) => url.pathname === path || url.pathname.startsWith(path.endsWith('/') ? path : `${path}/`);
    return [...this.#cookies.values()]
      .filter((c) => c.origin === url.origin && matches(c.path))
      .sort((a, b) => b.path.length - a.path.length)
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }
}

function decodeEntities(s) {
  const named = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };
  return s.replace(/&(#x[\da-f]+|#\d+|\w+);/gi, (m, e) => {
    if (e[0] !== '#') return named[e.toLowerCase()] ?? m;
    return String.fromCodePoint(e[1].toLowerCase() === 'x' ? parseInt(e.slice(2), 16) : Number(e.slice(1)));
  });
}

function attributes(tag) {
  const out = {};
  for (const [, name, value] of tag.matchAll(/([\w-]+)\s*=\s*"([^"]*)"/g)) out[name.toLowerCase()] = decodeEntities(value);
  return out;
}

// The first form of a page: its action, the values its inputs would send and
// which of them the user sees.
function parseForm(html) {
  const form = html.match(/<form\b([^>]*)>([\s\S]*?)<\/form>/i);
  if (!form) return undefined;
  const fields = {};
  const visible = new Set();
  for (const [input] of form[2].matchAll(/<input\b[^>]*>/gi)) {
    const { name, value = '', type = 'text' } = attributes(input);
    if (!name) continue;
    fields[name] = value;
    if (type !== 'hidden') visible.add(name);
  }
  return { action: attributes(`<form ${form[1]}>`).action, fields, visible };
}

// What the page says went wrong: the element with id="error", else its text.
function pageMessage(html) {
  const error = html.match(/id="error"[^>]*>([\s\S]*?)<\/p>/);
  const text = (error ? error[1] : html.replace(/<(script|style)[\s\S]*?<\/\1>/gi, ''))
    .replace(/<[^>]+>/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
  return decodeEntities(text).slice(0, 500);
}

// Walks the provider's pages from startUrl, filling in whatever form shows up,
// until a redirect leaves the provider (returns its URL) or the device flow's
// success page shows (returns undefined).
async function walk(startUrl, { username, password, userCode }) {
  const jar = new CookieJar();
  const { origin } = new URL(startUrl);
  let request = { url: new URL(startUrl), method: 'GET' };
  let loginsSent = 0;
  let codesSent = 0;

  for (let hop = 0; hop < 30; hop += 1) {
    const cookie = jar.header(request.url);
    let response;
    try {
      response = await fetch(request.url, {
        method: request.method,
        body: request.body,
        redirect: 'manual',
        headers: cookie ? { cookie } : {},
        signal: AbortSignal.timeout(10_000),
      });
    } catch (err) {
      throw new Failure(`${request.method} ${request.url}: ${err.cause?.message ?? err.message}`);
    }
    jar.store(request.url, response);

    if (response.status >= 300 && response.status < 400) {
      const location = new URL(response.headers.get('location'), request.url);
      if (location.origin !== origin) return location.href;
      request = { url: location, method: 'GET' };
      continue;
    }

    const html = await response.text();
    if (response.status !== 200) {
      throw new Failure(`${request.method} ${request.url} gave HTTP ${response.status}: ${pageMessage(html)}`);
    }
    if (html.includes('id="success"')) return undefined;

    const form = parseForm(html);
    if (!form) throw new Failure(`no form on ${request.url}: ${pageMessage(html)}`);
    const action = new URL(form.action || request.url, request.url);
    if (action.origin !== origin) {
      throw new Failure(`the provider posts a form to ${action.href} (response_mode=form_post is not supported)`);
    }

    if (form.visible.has('username')) {
      // The login form again after our credentials: they were rejected.
      if (loginsSent) throw new Failure(`login rejected: ${pageMessage(html)}`, 3);
      loginsSent += 1;
      Object.assign(form.fields, { username, password });
    } else if (form.visible.has('user_code')) {
      if (!userCode) throw new Failure(`the provider asks for a user code at ${request.url}`);
      if (codesSent) throw new Failure(`user code rejected: ${pageMessage(html)}`);
      codesSent += 1;
      form.fields.user_code = userCode;
    }
    request = { url: action, method: 'POST', body: new URLSearchParams(form.fields) };
  }
  throw new Failure(`too many steps from ${startUrl}`);
}

// url with its state query parameter set to state (added if missing, any
// duplicates dropped). Only that parameter is re-encoded: the others keep their
// exact bytes and order.
function withState(url, state) {
  const parsed = new URL(url);
  const isState = (part) => part.split('=')[0] === 'state';
  const parts = parsed.search.slice(1).split('&').filter(Boolean);
  const at = parts.findIndex(isState);
  const rest = parts.filter((part) => !isState(part));
  rest.splice(at === -1 ? rest.length : at, 0, `state=${encodeURIComponent(state)}`);
  parsed.search = rest.join('&');
  return parsed.href;
}

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      url: { type: 'string' },
      uri: { type: 'string' },
      code: { type: 'string' },
      username: { type: 'string' },
      password: { type: 'string' },
      follow: { type: 'boolean', default: false },
      'state-override': { type: 'string' },
    },
  });
  const [mode] = positionals;
  const credentials = { username: values.username, password: values.password };
  const complete = credentials.username !== undefined && credentials.password !== undefined;

  if (mode === 'code' && values.url && complete) {
    let final = await walk(values.url, credentials);
    if (final === undefined) throw new Failure('the provider showed a device success page, not a redirect');
    if (values['state-override'] !== undefined) final = withState(final, values['state-override']);
    console.log(final);
    if (values.follow) {
      const response = await fetch(final, { redirect: 'manual', signal: AbortSignal.timeout(10_000) })
        .catch((err) => { throw new Failure(`GET ${final}: ${err.cause?.message ?? err.message}`); });
      console.log(response.status);
    }
  } else if (mode === 'device' && values.uri && values.code && complete) {
    const final = await walk(values.uri, { ...credentials, userCode: values.code });
    if (final !== undefined) throw new Failure(`the device flow ended in a redirect to ${final}`);
    console.log('ok');
  } else {
    throw new Failure('usage: drive.mjs code --url URL --username U --password P [--follow] [--state-override VALUE]\n'
      + '       drive.mjs device --uri URI --code USER_CODE --username U --password P', 2);
  }
}

main().catch((err) => {
  console.error(`drive.mjs: ${err.message}`);
  process.exitCode = err instanceof Failure ? err.code : 1;
});
