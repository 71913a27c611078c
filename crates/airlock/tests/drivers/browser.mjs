// A headless Chromium for the web console's end-to-end tests
// (crates/airlock/tests/e2e), driven line by line over stdin/stdout.
//
// Start: `node browser.mjs` (Chromium from $CHROMIUM, else /usr/bin/chromium).
// Once the browser is up it prints {"ready":true}. Then each stdin line is one
// JSON command and gets exactly one JSON line back: {"ok":true, ...result} or
// {"ok":false,"error":"..."}. A failed command never ends the process; stdin
// EOF closes the browser and exits 0.
//
// Every command may name a `ctx` (default "default"): its own BrowserContext
// (own cookies) with one page, made on first use, so two users can be logged
// in at once. Any command may give `timeout_ms` (default 10000).
//
//   goto {url}                     -> {status, url}  (final URL, main response)
//   click {selector}   fill {selector, value}   select {selector, value}
//   check {selector}
//   submit {selector}              -> {status, url}  (click, await navigation)
//   text {selector}                -> {text}   innerText of the first match
//   texts {selector}               -> {texts}  of every match
//   count {selector}               -> {count}
//   attr {selector, name}          -> {value}  (null when absent)
//   wait {selector, state?, timeout_ms?}  state: visible|attached|detached|hidden
//   wait_text {selector, contains, timeout_ms?}  (CSS selector only)
//   url -> {url}      html -> {html}      eval {js} -> {value}  (an expression)
//   fetch {method, url, headers?, body?, follow?}  -> {status, body, location}
//       a request with the context's cookies (not from the page: no Origin or
//       Referer unless given in headers, no CORS); relative URLs resolve
//       against the page's; redirects are not followed unless follow is true
//   screenshot {path, full_page?}  (full page unless full_page is false)
//   console_errors                 -> {errors}  console errors (CSP violations
//       included; "... (at URL)") and uncaught page errors since the context
//       was made. Chromium asks for /favicon.ico: a 404 there is an error too.
//   timing {url}                   -> {status, duration_ms, response_ms}
//       the navigation entry's duration (start to loadEventEnd) and
//       responseEnd - requestStart
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';

const TIMEOUT = 10000;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
    '--no-first-run', '--disable-extensions'],
});
const contexts = new Map();

async function open(name) {
  let c = contexts.get(name);
  if (c) return c;
  const context = await browser.newContext();
  const page = await context.newPage();
  c = { context, page, errors: [] };
  page.on('console', (m) => {
    if (m.type() === 'error') c.errors.push(m.location().url ? `${m.text()} (at ${m.location().url})` : m.text());
  });
  page.on('pageerror', (e) => c.errors.push(String(e)));
  contexts.set(name, c);
  return c;
}

const reply = (r) => ({ status: r ? r.status() : null });

async function run(q) {
  const { page, context, errors } = await open(q.ctx ?? 'default');
  const timeout = q.timeout_ms ?? TIMEOUT;
  page.setDefaultTimeout(timeout);
  switch (q.cmd) {
    case 'goto': return { ...reply(await page.goto(q.url)), url: page.url() };
    case 'click': await page.click(q.selector); return {};
    case 'fill': await page.fill(q.selector, q.value); return {};
    case 'select': await page.selectOption(q.selector, q.value); return {};
    case 'check': await page.check(q.selector); return {};
    case 'submit': {
      const nav = page.waitForNavigation();
      nav.catch(() => {}); // a failed click reports its own error
      await page.click(q.selector);
      return { ...reply(await nav), url: page.url() };
    }
    case 'text': return { text: await page.locator(q.selector).first().innerText() };
    case 'texts': return { texts: await page.locator(q.selector).allInnerTexts() };
    case 'count': return { count: await page.locator(q.selector).count() };
    case 'attr': return { value: await page.locator(q.selector).first().getAttribute(q.name) };
    case 'wait': await page.waitForSelector(q.selector, { state: q.state ?? 'visible' }); return {};
    case 'wait_text':
      await page.waitForFunction(([s, t]) => document.querySelector(s)?.innerText.includes(t),
        [q.selector, q.contains]);
      return {};
    case 'url': return { url: page.url() };
    case 'html': return { html: await page.content() };
    case 'eval': return { value: (await page.evaluate(q.js)) ?? null };
    case 'fetch': {
      const r = await context.request.fetch(new URL(q.url, page.url()).href, {
        method: q.method ?? 'GET', headers: q.headers, data: q.body, maxRedirects: q.follow ? 20 : 0, timeout,
      });
      return { status: r.status(), body: await r.text(), location: r.headers()['location'] ?? null };
    }
    case 'screenshot': await page.screenshot({ path: q.path, fullPage: q.full_page ?? true }); return {};
    case 'console_errors': return { errors: [...errors] };
    case 'timing': {
      const r = await page.goto(q.url);
      const n = await (await page.waitForFunction(() => {
        const e = performance.getEntriesByType('navigation')[0];
        return e && e.loadEventEnd > 0 && { d: e.duration, r: e.responseEnd - e.requestStart };
      })).jsonValue();
      return { ...reply(r), duration_ms: n.d, response_ms: n.r };
    }
    default: throw new Error(`unknown cmd ${JSON.stringify(q.cmd)}`);
  }
}

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
process.stdout.on('error', () => process.exit(0)); // reader gone (EPIPE); Playwright kills Chromium on exit
out({ ready: true });
for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  if (!line.trim()) continue;
  try {
    out({ ok: true, ...(await run(JSON.parse(line))) });
  } catch (e) {
    out({ ok: false, error: String(e?.message ?? e).replace(/\x1b\[[0-9;]*m/g, '') });
  }
}
await browser.close();
process.exit(0);
