// make test-browser: a real browser (Debian's chromium, headless, driven
// by playwright-core) logs in to the GUI of a running netwatch deployment,
// opens the client's Client Events for Generic.Events.TrackNetworkConnections,
// finds the row of a connection this script made, and saves a screenshot.
//
//   node client-events.mjs INFO.json SCREENSHOT.png
//
// INFO.json is what `tools/run -info` writes (GUI URL, login, client id,
// demo port). run.sh starts that deployment and stops it afterwards.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import net from 'node:net';

const ARTIFACT = 'Generic.Events.TrackNetworkConnections';
const [infoPath, screenshotPath] = process.argv.slice(2);
if (!infoPath || !screenshotPath) {
  console.error('usage: node client-events.mjs INFO.json SCREENSHOT.png');
  process.exit(2);
}
const info = JSON.parse(fs.readFileSync(infoPath, 'utf8'));
for (const k of ['gui_url', 'user', 'password', 'client_id']) {
  if (!info[k]) throw new Error(`${infoPath}: no ${k}`);
}
const guiHost = new URL(info.gui_url).hostname;
if (guiHost !== '127.0.0.1' && guiHost !== 'localhost') {
  throw new Error(`refusing a GUI that is not on loopback: ${info.gui_url}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.log('test-browser:', ...a);

// Bounded polling: f() until it returns a truthy value or ms pass.
async function poll(what, ms, f, every = 1000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await f();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(every);
  }
  throw new Error(`timed out after ${ms / 1000} s waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

// The loopback address the deployment records connections to (run.sh
// starts it with `tools/run -only-remote` so that other loopback traffic on
// the host stays out of the table).
const REMOTE = process.env.NETWATCH_REMOTE || '127.0.0.1';

// A connection of this process to a listener of its own on REMOTE, held
// 1.5 s.
async function makeConnection() {
  const server = net.createServer((c) => c.resume());
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, REMOTE, resolve);
  });
  const remotePort = server.address().port;
  const sock = net.connect({ host: REMOTE, port: remotePort });
  await new Promise((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  const made = { pid: process.pid, localPort: sock.localPort, remotePort, at: Date.now() };
  await sleep(1500);
  sock.destroy();
  server.close();
  return made;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
let failed = false;
try {
  // The GUI asks for HTTP basic auth, on a self-signed certificate.
  const context = await browser.newContext({
    ignoreHTTPSErrors: true,
    httpCredentials: { username: info.user, password: info.password },
    viewport: { width: 2400, height: 1200 },
  });
  // Nothing but the deployment on loopback may be reached.
  await context.route('**/*', (route) => {
    const h = new URL(route.request().url()).hostname;
    if (h === '127.0.0.1' || h === 'localhost') return route.continue();
    return route.abort();
  });
  const page = await context.newPage();
  page.on('crash', () => console.error('test-browser: page crashed'));

  // Log in: the welcome page shows the user's name once authenticated.
  await page.goto(new URL('app/index.html', info.gui_url).href);
  await page.getByText(info.user, { exact: true }).first().waitFor({ timeout: 60000 });
  log('logged in as', info.user);

  const conn = await makeConnection();
  log(`connection made: node pid ${conn.pid}, port ${conn.localPort} -> ${REMOTE}:${conn.remotePort}`);

  // Wait until the server has the row (the same API the GUI table uses).
  const tableURL = new URL('api/v1/GetTable', info.gui_url);
  Object.entries({
    client_id: info.client_id, artifact: ARTIFACT, type: 'CLIENT_EVENT',
    start_time: Math.floor(conn.at / 1000) - 5, end_time: 2000000000, rows: 10000,
  }).forEach(([k, v]) => tableURL.searchParams.set(k, String(v)));
  await poll('the connection\'s rows to reach the server', 60000, async () => {
    const r = await context.request.get(tableURL.href);
    if (!r.ok()) throw new Error(`GetTable: HTTP ${r.status()}`);
    const body = await r.json();
    const cols = body.columns || [];
    const diffs = new Set((body.rows || [])
      .map((row) => Object.fromEntries(cols.map((c, i) => [c, JSON.parse(row.json)[i]])))
      .filter((rec) => rec.Pid === conn.pid && rec.Laddr && rec.Laddr.Port === conn.localPort)
      .map((rec) => rec.Diff));
    return diffs.has('added') && diffs.has('removed');
  });
  log('the server has the added and removed rows');

  // Client Events > Generic.Events.TrackNetworkConnections, through the
  // GUI: the client's page, "Client Events" in the left bar, then the
  // artifact in the "Select artifact" list.
  await page.goto(new URL(`app/index.html#/host/${info.client_id}`, info.gui_url).href);
  await page.getByText('Client Events', { exact: true }).first().click();
  await page.locator('button', { hasText: 'Select artifact' }).click();
  await page.locator('.dropdown-menu.show a', { hasText: ARTIFACT }).first().click();
  await page.locator('#row_count_selector').waitFor({ timeout: 30000 });
  log('Client Events page open for', ARTIFACT);

  // 100 rows a page, then page forward (bounded) until the row shows.
  await page.locator('#row_count_selector').click();
  await page.locator('.dropdown-menu.show a', { hasText: /^100$/ }).click();

  // Hide the numeric duplicates of FamilyString/TypeString and the UID,
  // through the table's Show/Hide Columns menu, so the row fits.
  await page.locator('tbody tr').first().waitFor({ timeout: 30000 });
  await page.locator('button:has(svg[data-icon="table-columns"])').first().click();
  for (const col of ['Family', 'Type', 'FamilyString', 'FirstSeen', 'Uid', 'ClientId']) {
    const item = page.locator('.dropdown-menu.show a.dropdown-item', { hasText: new RegExp(`^${col}$`) });
    if (await item.count()) await item.first().click();
  }
  await page.keyboard.press('Escape');

  // A row of the connection: its Pid and Diff cells, and its local port
  // in the Laddr tree. (Cells are matched whole: a row's text runs cells
  // together, e.g. "…Zadded2026…".)
  const cell = (text) => page.locator('td').getByText(text, { exact: true });
  const connRows = (diff) => page.locator('tbody tr')
    .filter({ has: cell(String(conn.pid)) })
    .filter({ has: cell(diff) })
    .filter({ hasText: new RegExp(`"Port":\\s*${conn.localPort}(?!\\d)`) });
  const rowLocator = connRows('added');
  // The table starts at the first event of the day; "Next" (the forward
  // icon) moves it on. (evaluate: the button's tooltip overlays it.)
  const next = page.locator('button:has(svg[data-icon="forward"])').first();
  const firstCell = page.locator('tbody tr').first();
  let found = false;
  for (let pageNo = 0; pageNo < 30 && !found; pageNo++) {
    found = await rowLocator.first().waitFor({ timeout: 3000 }).then(() => true, () => false);
    if (!found) {
      const before = await firstCell.innerText().catch(() => '');
      await next.evaluate((b) => b.click());
      const moved = await poll('the next page', 10000,
        async () => (await firstCell.innerText().catch(() => '')) !== before, 200).then(() => true, () => false);
      if (!moved) break; // the last page
    }
  }
  if (!found) throw new Error(`row of pid ${conn.pid} port ${conn.localPort} not found in the Client Events table`);
  const row = rowLocator.first();
  const removed = connRows('removed').first();
  await removed.waitFor({ timeout: 5000 }).catch(() => {
    throw new Error('the removed row of the connection is not in the table');
  });
  for (const r of [row, removed]) {
    await r.evaluate((el) => {
      el.style.outline = '3px solid #d62728';
      el.style.outlineOffset = '-3px';
    });
  }
  const text = await row.innerText();
  for (const want of [String(conn.pid), String(conn.localPort), String(conn.remotePort), 'node', 'outbound']) {
    if (!text.includes(want)) throw new Error(`added row lacks ${want}: ${text}`);
  }
  await row.scrollIntoViewIfNeeded();
  log('found the rows in the GUI:', text.replace(/\s+/g, ' ').slice(0, 160), '…');

  // Down to just below the connection's rows.
  const box = await removed.boundingBox();
  const vp = page.viewportSize();
  const height = box ? Math.min(vp.height, Math.ceil(box.y + box.height + 24)) : vp.height;
  await page.screenshot({ path: screenshotPath, clip: { x: 0, y: 0, width: vp.width, height } });
  log('screenshot saved to', screenshotPath);
} catch (e) {
  failed = true;
  console.error('test-browser: FAIL:', e.message);
  try {
    const pages = browser.contexts().flatMap((c) => c.pages());
    if (pages[0]) {
      const p = process.env.FAILURE_SCREENSHOT || 'test-browser-failure.png';
      await pages[0].screenshot({ path: p });
      console.error('test-browser: page at failure saved to', p);
    }
  } catch {}
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
