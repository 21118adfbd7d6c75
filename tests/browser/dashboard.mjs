// The dashboard in a real headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core): loads the page of a running mekong, collects every console error,
// reads what the page drew and what the API answers to the same queries, measures the time
// to first render and the bytes downloaded, takes a screenshot, and prints one JSON line
// that tests/e2e/dashboard.rs checks. With MEKONG_EXPECT_ALERT it prints {"ready":true}
// after the first render and waits for an alert on that device to show (the caller raises
// it meanwhile).
//
// Environment: MEKONG_URL (http://127.0.0.1:PORT), MEKONG_SCREENSHOT (a PNG path, optional),
// MEKONG_TOKEN (an API token the page must ask for, optional), MEKONG_EXPECT_ALERT (a device
// id, optional), CHROMIUM (default /usr/bin/chromium).
import { chromium } from 'playwright-core';

const base = process.env.MEKONG_URL;
const token = process.env.MEKONG_TOKEN || '';
const expectAlert = process.env.MEKONG_EXPECT_ALERT || '';
const WAIT = 15000;

async function api(path) {
  const headers = token ? { Authorization: 'Bearer ' + token } : {};
  const res = await fetch(base + path, { headers });
  if (!res.ok) throw new Error(`GET ${path}: ${res.status}`);
  return res.json();
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // This machine's network is closed: Chromium's own background connections only fail.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const out = { console_errors: [], console_warnings: [], failed_requests: [], checks: [] };
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') out.console_errors.push(m.text());
    if (m.type() === 'warning') out.console_warnings.push(m.text());
  });
  page.on('pageerror', (e) => out.console_errors.push('uncaught: ' + e.message));
  page.on('requestfailed', (r) => out.failed_requests.push(r.url() + ' ' + (r.failure() || {}).errorText));
  const encodings = {};
  // Requests the page sent without a token and the API refused: how a page that needs one
  // learns to ask for it. Chromium logs each as a console error, and the page sends its first
  // requests together, so more than one can come, before or after the form shows.
  const refusedWithoutToken = [];
  page.on('response', (r) => {
    encodings[new URL(r.url()).pathname] = r.headers()['content-encoding'] || 'identity';
    if (r.status() === 401) refusedWithoutToken.push(r.request().headerValue('authorization').then((v) => v === null));
  });

  await page.goto(base + '/', { waitUntil: 'load' });
  if (token) {
    // The page asks for a token; the 401s that told it so are the expected errors (below).
    await page.waitForSelector('#token-form:not([hidden])', { timeout: WAIT });
    out.asked_for_token = true;
    await page.fill('#token', token);
    await page.click('#token-form button');
  }
  await page.waitForFunction(() => window.mekongDashboard && window.mekongDashboard.ready, null, { timeout: WAIT });
  await page.waitForTimeout(300); // let the first frame's rendering of the table settle

  // The stations listed are the API's devices.
  out.stations_listed = await page.$$eval('#stations tbody tr[data-device]', (rows) => rows.map((r) => r.getAttribute('data-device')));
  out.api_devices = (await api('/v1/devices')).devices.map((d) => d.id);
  out.markers = await page.$$eval('.leaflet-interactive', (m) => m.length);

  // A chart's points are what the API answered to the same query, for two ranges.
  for (const range of ['6 h', '24 h']) {
    const before = await page.evaluate(() => window.mekongDashboard.charts);
    await page.click(`#ranges button:text-is("${range}")`);
    await page.waitForFunction((n) => window.mekongDashboard.charts > n, before, { timeout: WAIT });
    const drawn = await page.evaluate(() => {
      const d = window.mekongDashboard;
      return { chart: d.chart, drawn: d.drawnPoints() };
    });
    const body = await api(drawn.chart.url);
    const answered = drawn.chart.mode === 'raw' ? body.points.length : body.buckets.length;
    out.checks.push({ range, mode: drawn.chart.mode, url: drawn.chart.url, drawn: drawn.drawn - drawn.chart.appended, answered,
      device: drawn.chart.device, metric: drawn.chart.metric });
  }
  const before = await page.evaluate(() => window.mekongDashboard.charts);
  await page.click('#ranges button:text-is("6 h")');
  await page.waitForFunction((n) => window.mekongDashboard.charts > n, before, { timeout: WAIT });

  if (expectAlert) {
    console.log(JSON.stringify({ ready: true }));
    const t0 = Date.now();
    await page.waitForSelector(`#alerts li[data-device="${expectAlert}"]`, { timeout: WAIT });
    out.alert_shown_after_ms = Date.now() - t0;
  }

  // What the page cost: time to the first render (navigation start to the script's mark,
  // and the first contentful paint), and every response's bytes, on the wire and decoded.
  Object.assign(out, await page.evaluate(() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const resources = performance.getEntriesByType('resource');
    const all = [nav, ...resources];
    const sum = (k) => all.reduce((n, e) => n + (e[k] || 0), 0);
    const fcp = performance.getEntriesByName('first-contentful-paint')[0];
    return {
      first_render_ms: Math.round(window.mekongDashboard.firstRenderMs),
      first_contentful_paint_ms: fcp ? Math.round(fcp.startTime) : null,
      requests: all.length,
      transfer_bytes: sum('transferSize'),
      encoded_body_bytes: sum('encodedBodySize'),
      decoded_body_bytes: sum('decodedBodySize'),
      asset_decoded_bytes: all.filter((e) => !new URL(e.name).pathname.startsWith('/v1/')).reduce((n, e) => n + e.decodedBodySize, 0),
      asset_encoded_bytes: all.filter((e) => !new URL(e.name).pathname.startsWith('/v1/')).reduce((n, e) => n + e.encodedBodySize, 0),
      live: window.mekongDashboard.live,
    };
  }));
  out.encodings = encodings;
  if (token) {
    // As many 401 errors as requests refused for want of the token are expected; any other
    // error, a 401 to a request that carried the token included, stays.
    let expected = (await Promise.all(refusedWithoutToken)).filter(Boolean).length;
    out.refused_without_token = expected;
    out.console_errors = out.console_errors.filter((e) => !(e.includes('401') && expected-- > 0));
  }
  if (process.env.MEKONG_SCREENSHOT) await page.screenshot({ path: process.env.MEKONG_SCREENSHOT });
} finally {
  // What closing the page cuts short (the event stream) is no failure of the page.
  const result = JSON.stringify(out);
  await browser.close();
  console.log(result);
}
