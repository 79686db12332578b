// Drives Debian's chromium through heim's browser sign-in with the OpenID
// provider of idp.mjs, as a person would: open a page behind heim, sign in
// on the provider's form, consent, land back on the page.
//
//   node signin.mjs [--dir DIR] START_URL LOGIN [ACTION...]
//
// After signing in, each ACTION in turn:
//   visit:URL  open URL (the same browser, so the same cookies)
//   logout     open /.heim/logout on START_URL's host, press "Sign out",
//              then open START_URL afresh
//
// DIR (default: a fresh temp dir) holds chromium's profile (removed after
// a success) and, on failure, a screenshot. Prints one JSON line on stdout:
//   {"ok": true, "url", "status", "text", "body", "chain", "entry",
//    "authorization", "cookies", "actions": [...]}
// where `text` is the page as shown, `body` its response as sent, `chain` every main-frame response of the last navigation
// (redirects included) as {url, status, location} from the provider's last
// form on, `entry` the same for the way in from START_URL, `cookies` maps each
// cookie domain to its cookies' names and attributes (never values);
// `authorization` is the provider URL heim sent the browser to. Each action
// adds {"action": "visit", "url", "status", "text", "body", "chain"} or
// {"action": "logout", "page", "after", "cookies", "revisit"} (each a page
// as {url, status, chain}, `after` with its text and body).
// On failure {"ok": false, "error", "step", "url", "text", "chain",
// "screenshot"} and exit status 1. Every wait is bounded.
//
// The only network is loopback: *.test names resolve to 127.0.0.1, every
// other name fails to resolve, and requests anywhere else are aborted (the
// provider's pages @import a web font).

import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

const STEP_MS = 20_000;
const TOTAL_MS = 120_000;

const argv = process.argv.slice(2);
let dir;
if (argv[0] === '--dir') {
  dir = argv[1];
  argv.splice(0, 2);
}
const [startUrl, login, ...actions] = argv;
if (!startUrl || !login || actions.some((a) => a !== 'logout' && !a.startsWith('visit:'))) {
  console.error('usage: node signin.mjs [--dir DIR] START_URL LOGIN [visit:URL | logout]...');
  process.exit(64);
}
dir ??= mkdtempSync(join(tmpdir(), 'heim-browser-'));
mkdirSync(dir, { recursive: true });

const print = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

const watchdog = setTimeout(() => {
  print({ ok: false, step: 'watchdog', error: `no result within ${TOTAL_MS} ms` });
  process.exit(2);
}, TOTAL_MS);

let step = 'launch';
let context;
let page;
let chain = [];
let lastResponse;

// Loopback only: the test's names and literal loopback addresses.
function allowed(url) {
  if (url.startsWith('data:') || url.startsWith('about:') || url.startsWith('blob:')) return true;
  const { hostname } = new URL(url);
  return hostname === '127.0.0.1' || hostname === 'test' || hostname.endsWith('.test');
}

async function cookies() {
  const byDomain = {};
  for (const c of await context.cookies()) {
    (byDomain[c.domain] ??= []).push({
      name: c.name,
      domain: c.domain,
      path: c.path,
      secure: c.secure,
      httpOnly: c.httpOnly,
      sameSite: c.sameSite,
      session: c.expires === -1,
    });
  }
  return byDomain;
}

// Opens `url` and records the main-frame responses until it settles.
async function visit(url) {
  chain = [];
  lastResponse = undefined;
  await page.goto(url, { waitUntil: 'load' });
}

// Clicks `locator` (a form's submit button) and waits for the next page.
async function submit(locator) {
  chain = [];
  lastResponse = undefined;
  await Promise.all([page.waitForEvent('load'), locator.click()]);
}

// The provider's login form, then its consent page when it asks.
async function signInAtProvider(providerOrigin) {
  step = 'provider login form';
  await page.waitForURL((u) => u.origin === providerOrigin, { waitUntil: 'load' });
  const form = page.locator('form:has(input[name=login])');
  await form.locator('input[name=login]').fill(login);
  await form.locator('input[name=password]').fill('any password');
  await submit(form.locator('button[type=submit]'));

  const consent = page.locator('form:has(input[name=prompt][value=consent])');
  if (new URL(page.url()).origin === providerOrigin && (await consent.count()) > 0) {
    step = 'provider consent';
    await submit(consent.locator('button[type=submit]'));
  }
  step = 'return to heim';
  await page.waitForURL((u) => u.origin !== providerOrigin, { waitUntil: 'load' });
}

// The last response in the chain: the status of the page on screen.
function landed() {
  const last = chain[chain.length - 1];
  return { url: page.url(), status: last?.status ?? null, chain };
}

// The page on screen as text, and its response body as sent (the echo
// route's JSON, which chromium shows inside its own markup).
async function content() {
  const text = await page.locator('body').innerText();
  let body = null;
  try {
    body = await lastResponse?.text();
  } catch {
    // An error page of chromium's own has no body from the network.
  }
  return { text, body };
}

async function main() {
  context = await chromium.launchPersistentContext(join(dir, 'profile'), {
    executablePath: '/usr/bin/chromium',
    headless: true,
    ignoreHTTPSErrors: true,
    timeout: STEP_MS,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // `*` spans dots (auth.wild.test too); every other name fails.
      '--host-resolver-rules=MAP *.test 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
    ],
  });
  context.setDefaultTimeout(STEP_MS);
  context.setDefaultNavigationTimeout(STEP_MS);
  await context.route((u) => !allowed(u.href), (route) => route.abort('blockedbyclient'));
  page = context.pages()[0] ?? (await context.newPage());
  page.on('response', (r) => {
    let main = false;
    try {
      main = r.request().isNavigationRequest() && r.frame() === page.mainFrame();
    } catch {
      // A response without a frame (a worker's) is not a page's.
    }
    if (main) {
      lastResponse = r;
      chain.push({ url: r.url(), status: r.status(), location: r.headers().location ?? null });
    }
  });

  step = 'open start URL';
  await visit(startUrl);
  // heim sends the browser on to the provider's authorization endpoint; the
  // provider's origin is where the login form is.
  // (START_URL may be the authorization endpoint itself.)
  const hops = [startUrl, ...chain.filter((r) => r.location).map((r) => new URL(r.location, r.url).href)];
  const authorization = hops.find((u) => new URL(u).hostname === '127.0.0.1');
  if (!authorization) throw new Error('heim did not redirect to the provider (no hop to 127.0.0.1)');
  const providerOrigin = new URL(authorization).origin;
  const entry = chain;
  await signInAtProvider(providerOrigin);

  const result = {
    ok: true,
    ...landed(),
    entry,
    authorization,
    ...(await content()),
  };

  result.actions = [];
  for (const action of actions) {
    if (action.startsWith('visit:')) {
      const url = action.slice('visit:'.length);
      step = `visit ${url}`;
      await visit(url);
      result.actions.push({ action: 'visit', ...landed(), ...(await content()) });
    } else if (action === 'logout') {
      step = 'logout page';
      await visit(new URL('/.heim/logout', startUrl).href);
      const logoutPage = landed();
      step = 'press Sign out';
      await submit(page.getByRole('button', { name: 'Sign out' }));
      const after = { ...landed(), ...(await content()) };
      const cookiesAfter = await cookies();
      step = 'visit after logout';
      await visit(startUrl);
      result.actions.push({ action: 'logout', page: logoutPage, after, cookies: cookiesAfter, revisit: landed() });
    }
  }
  result.cookies = await cookies();
  return result;
}

try {
  const result = await main();
  print(result);
  await context.close();
  // The profile is only worth keeping beside a failure's screenshot.
  rmSync(join(dir, 'profile'), { recursive: true, force: true });
  clearTimeout(watchdog);
  process.exit(0);
} catch (err) {
  // eslint-disable-next-line no-control-regex
  const out = { ok: false, step, error: String(err?.message ?? err).replace(/\x1b\[[0-9;]*m/g, ""), chain };
  try {
    out.url = page?.url();
    out.text = (await page?.locator('body').innerText({ timeout: 2_000 }))?.slice(0, 4_000);
    out.screenshot = join(dir, 'failure.png');
    await page?.screenshot({ path: out.screenshot, fullPage: true, timeout: 5_000 });
  } catch (e) {
    out.screenshot_error = String(e?.message ?? e);
  }
  print(out);
  await context?.close().catch(() => {});
  process.exit(1);
}
