#!/usr/bin/env node
// Browser end-to-end test of the admin panel: headless Debian Chromium, driven by playwright-core,
// walks the first run as an admin would: setup token and password, every wizard step (fields
// found by their labels, "Save and continue"), Review → Apply, the generated configuration, the
// verification page (nothing runs until "Run the checks"; the results stream in), a test call
// from that page to "media received" with a path and round trip (and from a phone-sized page
// with Chromium's fake camera, through the public listener), and the log page's level filter
// and download. It takes a screenshot of each page, then looks at every page again on a
// phone and on a desktop in dark mode. On every page it checks the layout: nothing wider than the
// viewport or hidden behind a sideways scrollbar, and at desktop width no card taller than the
// viewport.
//
//   node wizard.mjs CONFIG.json      (or the config itself as a JSON argument, or on stdin)
//
// Config: {
//   "adminUrl": "http://127.0.0.1:PORT",   the admin panel
//   "setupToken": "...", "password": "...",
//   "setupUrl": "http://127.0.0.1:PORT/setup?token=...",   optional: the log's setup URL
//   "serverName": "localhost:PORT", "clientUrl": "http://127.0.0.1:PORT",   the homeserver
//   "rtcUrl": "http://127.0.0.1:PORT",     the public URL (one hostname)
//   "network": {"lan_ip": "127.0.0.1", "http": 8880, ...},   the Network step's fields
//   "expectPublicIp": "127.0.0.1",         what "Detect public IP" must report
//   "accessToken": "...",                  optional: given to the verification page
//   "outDir": "/path", "prefix": "admin",  screenshots: OUTDIR/PREFIX-NN-NAME.png
//   "tourDir": "/path",                    optional: screenshots of every page on a phone and
//                                          a desktop in dark mode, for a person to look at
//   "deadlineMs": 120000
// }
// Prints one JSON report on stdout (progress on stderr); exits 0 when every step worked, 1 when
// one did not, 2 when the runner itself could not run. Nothing is downloaded: Chromium is
// /usr/bin/chromium or $RTCBOX_CHROMIUM.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { printReportAndExit } from './report.mjs';

const t0 = Date.now();
const log = (...args) => console.error(`[${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...args);

const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  // The test call: a phone page's "camera" is Chromium's fake device, granted without a prompt.
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
];
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
// Screenshots of long pages stop here, so the images stay a sensible size.
const MAX_SHOT_HEIGHT = 2400;
// Screenshot names, numbered by their place here (docs/admin-panel.md shows some of them by
// name): the main path first, then the extra views.
const SHOTS = [
  'setup', 'dashboard', 'wizard-homeserver', 'wizard-endpoints', 'wizard-tls', 'wizard-network',
  'wizard-turn', 'wizard-review', 'outputs', 'verify', 'wizard-homeserver-error',
  'wizard-network-phone', 'menu-phone', 'wizard-network-lan-doubt', 'verify-test-call',
  'test-call-phone', 'verify-test-call-dark', 'logs',
];
// How long a test call may take to show media (ICE and DTLS on loopback take a second or two).
const CALL_TIMEOUT_MS = 30000;
const VERIFY_TIMEOUT_MS = 120000;

// Runs in the page: what breaks the layout at this viewport. No element may reach past the
// viewport's sides, nothing may scroll sideways (the page, or a box hiding part of a table; a
// code block's own scrollbar is fine), and with `cardLimit` no card may be taller than that.
function layoutProblems(cardLimit) {
  const width = document.documentElement.clientWidth;
  const describe = (el) => {
    const classes = [...el.classList].map((c) => `.${c}`).join('');
    const text = (el.textContent ?? '').trim().replace(/\s+/g, ' ').slice(0, 40);
    return `${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ''}${classes} "${text}"`;
  };
  // Inside a box that clips or scrolls, that box is what counts (it is checked itself).
  const clipped = (el) => {
    for (let up = el.parentElement; up && up !== document.body; up = up.parentElement) {
      if (getComputedStyle(up).overflowX !== 'visible') return true;
    }
    return false;
  };
  const problems = [];
  if (document.documentElement.scrollWidth > width) {
    problems.push(`the page scrolls sideways: ${document.documentElement.scrollWidth} px wide in a ${width} px viewport`);
  }
  for (const el of document.body.querySelectorAll('*')) {
    // The skip link waits off-screen until it has focus; code blocks scroll on purpose.
    if (el.closest('.skip, .sr, pre')) continue;
    const style = getComputedStyle(el);
    if (style.display === 'none' || style.visibility === 'hidden') continue;
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;
    if (/(auto|scroll)/.test(style.overflowX) && el.scrollWidth > el.clientWidth + 1) {
      problems.push(`${describe(el)} hides ${el.scrollWidth - el.clientWidth} px behind a sideways scrollbar`);
    } else if ((box.left < -1 || box.right > width + 1) && !clipped(el)) {
      problems.push(`${describe(el)} reaches past the viewport: ${Math.round(box.left)}..${Math.round(box.right)} of ${width} px`);
    }
    if (cardLimit && el.matches('.card') && box.height > cardLimit) {
      problems.push(`${describe(el)} is ${Math.round(box.height)} px tall, taller than the ${cardLimit} px viewport`);
    }
  }
  return problems.slice(0, 10);
}

function readConfig() {
  const arg = process.argv[2];
  if (arg && arg.trimStart().startsWith('{')) return JSON.parse(arg);
  return JSON.parse(readFileSync(arg && arg !== '-' ? arg : 0, 'utf8'));
}

class Walk {
  constructor(opts, report) {
    this.opts = opts;
    this.report = report;
  }

  step(name, extra = {}) {
    this.report.steps.push({ name, url: this.page?.url(), ms: Date.now() - t0, ...extra });
    log(name, Object.keys(extra).length ? JSON.stringify(extra) : '');
  }

  check(condition, message) {
    if (!condition) throw new Error(message);
  }

  watch(page, label) {
    page.on('console', (m) => {
      // A form the test submits wrong on purpose answers 400, which Chromium logs.
      if (this.rejecting && /status of 400/.test(m.text())) return;
      // Ending the test call: rtcbox closes the signaling socket after the leave while
      // livekit-client still reads it, which it logs as an error (the call is over either way).
      // And Room.disconnect() closes its engine before it stops its 4 s connection check, so a
      // check that falls into the close warns of a "connection state mismatch" (seen in CI).
      if (this.endingCall && /error reading from signal stream|detected connection state mismatch/.test(m.text())) return;
      if (m.type() === 'error' || m.type() === 'warning') {
        this.report.console.push(`${label} ${m.type()}: ${m.text()}`.slice(0, 500));
      }
    });
    page.on('pageerror', (e) => this.report.console.push(`${label} page error: ${e.message}`));
  }

  // OUTDIR/PREFIX-NN-NAME.png (NN: NAME's place in SHOTS): the whole page up to MAX_SHOT_HEIGHT.
  async shot(page, name) {
    const number = SHOTS.indexOf(name) + 1 || SHOTS.length + 1;
    const file = join(this.opts.outDir, `${this.opts.prefix}-${String(number).padStart(2, '0')}-${name}.png`);
    const size = await page.evaluate(() => ({
      width: document.documentElement.clientWidth,
      height: document.documentElement.scrollHeight,
    }));
    await page.screenshot({
      path: file, fullPage: true, animations: 'disabled', caret: 'hide',
      clip: { x: 0, y: 0, width: size.width, height: Math.min(size.height, MAX_SHOT_HEIGHT) },
    });
    this.report.screenshots.push(file);
    await this.layout(page, name);
    return file;
  }

  // Checks the layout of the page now shown (layoutProblems; cards only at desktop width). The
  // problems are kept in the report under `label`; any at all fail the walk at its end.
  async layout(page, label) {
    const viewport = page.viewportSize();
    const cardLimit = viewport.width >= DESKTOP.width ? viewport.height : 0;
    const problems = await page.evaluate(layoutProblems, cardLimit);
    this.report.layout[label] = problems;
    if (problems.length) log(`layout of ${label}:`, problems.join('; '));
  }

  // On a phone the navigation is one "Menu" button: it opens a list of every page that fits
  // the screen, and a link in it works.
  async phoneMenu(page) {
    await page.goto(`${this.opts.adminUrl}/`);
    const viewport = page.viewportSize();
    const nav = page.getByRole('navigation', { name: 'Main' });
    this.check(await nav.count() === 0, 'a phone shows the navigation bar instead of the menu button');
    const button = page.locator('header summary');
    this.check(await button.isVisible() && (await button.textContent()).includes('Menu'), 'no Menu button on a phone');
    await button.click();
    await nav.waitFor();
    const links = nav.getByRole('link');
    const labels = await links.allTextContents();
    this.check(labels.join(',') === 'Dashboard,Setup,Configuration,Verify,Logs,Settings,Backup', `the menu lists ${labels}`);
    for (const link of await links.all()) {
      const box = await link.boundingBox();
      this.check(box && box.x >= 0 && box.x + box.width <= viewport.width && box.y + box.height <= viewport.height
        && box.height >= 40, `menu entry ${await link.textContent()} is not a full tap target on screen: ${JSON.stringify(box)}`);
    }
    await this.shot(page, 'menu-phone');
    await Promise.all([
      page.waitForURL((url) => url.pathname === '/outputs'),
      nav.getByRole('link', { name: 'Configuration' }).click(),
    ]);
    this.check(await page.locator('header summary').isVisible(), 'no Menu button on the next page');
    this.check(await nav.count() === 0, 'the menu stays open on the next page');
    this.step('phone menu', { labels });
  }

  // Every page of the panel in one more look (`scheme`, `viewport`): its layout, and with
  // `tourDir` a screenshot for a person to look at.
  async tour(browser, storageState, name, viewport, scheme) {
    const context = await browser.newContext({
      viewport, colorScheme: scheme, deviceScaleFactor: 1, storageState,
      ...(viewport.width < 600 ? { isMobile: true, hasTouch: true } : {}),
    });
    const page = await context.newPage();
    this.watch(page, name);
    if (viewport.width < 600) await this.phoneMenu(page);
    for (const path of ['/', '/wizard/homeserver', '/wizard/tls', '/wizard/network', '/wizard/turn',
      '/wizard/review', '/outputs', '/verify', '/logs', '/settings', '/backup']) {
      await page.goto(`${this.opts.adminUrl}${path}`, { timeout: VERIFY_TIMEOUT_MS });
      const label = `${name} ${path}`;
      await this.layout(page, label);
      if (path === '/settings') {
        // One form, grouped by purpose; fields for a certificate mode show only with it.
        const legends = await page.locator('fieldset.group > legend').allTextContents();
        this.check(['Calls', 'Public IP and media', 'Listeners and proxies', 'TURN', 'Certificate'].every((g) => legends.includes(g)),
          `${label}: the settings groups are ${JSON.stringify(legends)}`);
        this.check((await page.locator('form.settings-form button[type=submit]').count()) === 1, `${label}: not one Save`);
        const mode = page.locator('#f-tls_mode');
        if (await mode.count()) {
          await mode.selectOption('files');
          this.check(await page.locator('#f-tls_cert_file').isVisible(), `${label}: choosing files does not show the certificate file field`);
          await mode.selectOption('acme');
          this.check(!(await page.locator('#f-tls_cert_file').isVisible()), `${label}: the certificate file field stays for acme`);
        }
      }
      if (this.opts.tourDir) {
        mkdirSync(this.opts.tourDir, { recursive: true });
        const file = `${name}${path.replaceAll('/', '-').replace(/-$/, '-dashboard')}.png`;
        await page.screenshot({ path: join(this.opts.tourDir, file), fullPage: true, animations: 'disabled', caret: 'hide' });
      }
    }
    await context.close();
  }

  // Clicks a form's submit button; the POST to `action` must redirect (303) to `next` (which may
  // redirect on, to `landing`). When it does not, the error names the status, the page's message
  // and the Origin the browser sent.
  async submit(button, action, next, landing = next) {
    const page = this.page;
    const [response] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === action),
      page.getByRole('button', { name: button, exact: true }).click(),
    ]);
    if (response.status() !== 303) {
      await page.waitForLoadState();
      const sent = await response.request().allHeaders();
      const policy = response.headers()['referrer-policy'];
      const message = (await page.locator('main').innerText().catch(() => '')).trim().slice(0, 500);
      throw new Error(`"${button}" (POST ${action}) answered ${response.status()}, not a redirect to ${next}: `
        + `${JSON.stringify(message)}; the browser sent Origin: ${sent.origin ?? '(none)'}, Host: ${sent.host}; `
        + `the page's Referrer-Policy is ${policy ?? '(none)'}`);
    }
    const location = new URL(response.headers().location ?? '', page.url()).pathname;
    if (location !== next) throw new Error(`"${button}" (POST ${action}) redirected to ${location}, not ${next}`);
    await page.waitForURL((url) => url.pathname === landing);
  }

  async saveAndContinue(next) {
    const current = new URL(this.page.url()).pathname;
    await this.submit('Save and continue', current, `/wizard/${next}`);
  }

  label(text) {
    return this.page.getByLabel(text, { exact: true });
  }

  // Tab from the top of the page: the skip link comes first, and following it, Tab reaches
  // `field` within a few presses. Returns how many presses that took.
  async keyboardToField(fieldId, maxTabs) {
    const page = this.page;
    await page.evaluate(() => { document.activeElement?.blur(); window.scrollTo(0, 0); });
    await page.keyboard.press('Tab');
    const first = await page.evaluate(() => {
      const el = document.activeElement;
      const box = el.getBoundingClientRect();
      return { text: el.textContent.trim(), href: el.getAttribute('href'), visible: box.left >= 0 && box.width > 0 };
    });
    this.check(first.text === 'Skip to content' && first.href === '#content',
      `the first Tab stop is not the skip link: ${JSON.stringify(first)}`);
    this.check(first.visible, 'the skip link is not visible when it has focus');
    await page.keyboard.press('Enter');
    for (let tabs = 1; tabs <= maxTabs; tabs += 1) {
      await page.keyboard.press('Tab');
      const id = await page.evaluate(() => document.activeElement?.id);
      if (id === fieldId) return tabs;
    }
    throw new Error(`${maxTabs} Tab presses after the skip link did not reach #${fieldId}`);
  }

  // The facts a test call panel shows (data-call="state|path|rtt|loss").
  static callFacts(page, selector) {
    return page.evaluate((sel) => Object.fromEntries([...document.querySelectorAll(`${sel} [data-call]`)]
      .map((e) => [e.dataset.call, e.textContent.trim()])), selector);
  }

  // Waits until the test call panel `selector` shows received media with a path and a round
  // trip time (new ones: the state is reset when a call starts); returns its facts.
  async callReceives(page, selector, who) {
    try {
      await page.waitForFunction((sel) => {
        const fact = (name) => document.querySelector(`${sel} [data-call="${name}"]`)?.textContent.trim() ?? '';
        return fact('state') === 'media received' && /^(UDP|TCP|TURN)/.test(fact('path')) && /^\d+ ms$/.test(fact('rtt'));
      }, selector, { timeout: CALL_TIMEOUT_MS });
    } catch (e) {
      throw new Error(`${who}: no media received: ${JSON.stringify(await Walk.callFacts(page, selector))} (${e.message})`);
    }
    return Walk.callFacts(page, selector);
  }

  // The verification page's test call: the admin's browser sends a test pattern through the
  // SFU's public URL and receives it back; then a phone (390 px, Chromium's fake camera) joins
  // with the page's link, both sides see media, and the admin's page shows what the phone saw.
  async testCall(browser, page) {
    const endButton = page.getByRole('button', { name: 'End the test call' });
    this.check(!(await endButton.isVisible()), '"End the test call" is shown before a call started');
    await page.getByRole('button', { name: 'Start a test call' }).click();
    const admin = await this.callReceives(page, '#call-panel', 'the admin page');
    this.report.testCall = { admin };
    this.step('test call: media received', admin);
    this.check(await page.locator('#call-panel video').count() >= 1, 'no video of the test pattern on the page');
    const link = await page.locator('#call-link').getAttribute('href');
    this.check(await page.locator('#call-qr svg').isVisible(), 'no QR code for the phone');
    this.check(link.includes('/test-call#'), `the phone link is ${link}`);
    await page.locator('#test-call').scrollIntoViewIfNeeded();
    await this.shot(page, 'verify-test-call');

    const phone = await browser.newContext({
      viewport: PHONE, colorScheme: 'light', deviceScaleFactor: 1, isMobile: true, hasTouch: true,
    });
    const phonePage = await phone.newPage();
    this.watch(phonePage, 'phone call');
    await phonePage.goto(link);
    await phonePage.getByRole('button', { name: 'Join the test call' }).click();
    const phoneSaw = await this.callReceives(phonePage, '#phone-call', 'the phone page');
    this.check(!(await phonePage.getByRole('button', { name: 'Join the test call' }).isVisible()), 'the phone page still offers to join');
    this.report.testCall.phone = phoneSaw;
    await this.shot(phonePage, 'test-call-phone');
    // The admin's page shows what the phone measured, and the phone's camera.
    const relayed = await this.callReceives(page, '#call-phone-facts', 'the phone facts on the admin page');
    this.report.testCall.phoneOnAdminPage = relayed;
    this.check(await page.locator('#call-panel figure[data-who="the phone"] video').count() === 1, "no tile of the phone's video on the admin page");
    this.step('test call: a phone joined', phoneSaw);
    await page.emulateMedia({ colorScheme: 'dark' });
    await page.locator('#test-call').scrollIntoViewIfNeeded();
    await this.shot(page, 'verify-test-call-dark');
    await page.emulateMedia({ colorScheme: 'light' });
    this.endingCall = true;
    await page.getByRole('button', { name: 'End the test call' }).click();
    await page.locator('#call-panel [data-call="state"]', { hasText: 'ended' }).waitFor();
    await phone.close();
    this.endingCall = false;
    // Again, through the TURN relay only: the path says so.
    await page.getByLabel("Only through rtcbox's TURN relay", { exact: false }).check();
    await page.getByRole('button', { name: 'Start a test call' }).click();
    const viaTurn = await this.callReceives(page, '#call-panel', 'the admin page, TURN only');
    this.report.testCall.relayOnly = viaTurn;
    this.check(viaTurn.path.startsWith('TURN relay'), `a relay-only call took the path ${viaTurn.path}`);
    this.step('test call: through the TURN relay', viaTurn);
    this.endingCall = true;
    await page.getByRole('button', { name: 'End the test call' }).click();
    await page.locator('#call-panel [data-call="state"]', { hasText: 'ended' }).waitFor();
    this.endingCall = false;
  }

  // The log page: warnings and up only (rtcbox warned at start, e.g. about the setup URL), and
  // the same as a download.
  async logs(page) {
    await page.goto(`${this.opts.adminUrl}/logs`);
    await page.getByLabel('Show', { exact: true }).selectOption('warn');
    await Promise.all([
      page.waitForURL((url) => url.pathname === '/logs' && url.searchParams.get('level') === 'warn'),
      page.getByRole('button', { name: 'Show', exact: true }).click(),
    ]);
    const lines = (await page.locator('pre.log').textContent()).split('\n').filter((l) => /^\d{4}-/.test(l));
    this.check(lines.length > 0, 'no warnings on the log page, though rtcbox warned at start');
    const others = lines.filter((l) => !/^\S+\s+(WARN|ERROR)\s/.test(l));
    this.check(others.length === 0, `the warnings filter shows other lines: ${others.slice(0, 3)}`);
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('link', { name: 'Download' }).click(),
    ]);
    this.check(download.suggestedFilename() === 'rtcbox-log-warn.txt', `the download is called ${download.suggestedFilename()}`);
    const saved = await download.path();
    const text = readFileSync(saved, 'utf8');
    this.check(lines.every((l) => text.includes(l)), 'the download lacks lines the page shows');
    this.step('logs: filtered and downloaded', { warnings: lines.length });
    await this.shot(page, 'logs');
  }

  async run(browser) {
    const o = this.opts;
    const context = await browser.newContext({ viewport: DESKTOP, colorScheme: 'light', deviceScaleFactor: 1 });
    const page = await context.newPage();
    this.page = page;
    page.setDefaultTimeout(30000);
    this.watch(page, 'desktop');

    // First run: the panel sends a new browser to /setup.
    await page.goto(`${o.adminUrl}/`);
    this.check(new URL(page.url()).pathname === '/setup', `the first page is ${page.url()}, not /setup`);
    this.report.keyboard.setupTabsToToken = await this.keyboardToField('f-token', 3);
    // A mistyped repetition: the token stays, and the one problem is said at its field.
    await this.label('Setup token').fill(o.setupToken);
    await this.label('New password').fill(o.password);
    await this.label('Repeat the password').fill(`${o.password}!`);
    this.rejecting = true;
    await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === '/setup' && r.status() === 400),
      page.getByRole('button', { name: 'Set password and continue' }).click(),
    ]);
    await page.locator('#f-confirm-note [role="alert"]').waitFor();
    this.rejecting = false;
    const alerts = await page.locator('main [role="alert"]').allTextContents();
    this.check(alerts.length === 1 && alerts[0].includes('The two passwords differ'), `setup said ${JSON.stringify(alerts)}`);
    this.check(await this.label('Setup token').inputValue() === o.setupToken, 'a refused password cleared the setup token');
    this.step('setup: a mistyped password is refused, the token kept');
    // The setup URL from the log fills the token in (its origin is the panel's: the log names
    // the listener's own address, loopback here).
    if (o.setupUrl) {
      await page.goto(o.setupUrl);
      this.check(await this.label('Setup token').inputValue() === o.setupToken, 'the setup URL did not fill in the token');
    }
    await this.label('New password').fill(o.password);
    await this.label('Repeat the password').fill(o.password);
    await this.shot(page, 'setup');
    // Setting the password continues into the wizard, at its first step.
    await this.submit('Set password and continue', '/setup', '/wizard', '/wizard/homeserver');
    this.step('setup: password set, on to the wizard');
    await page.goto(`${o.adminUrl}/`);
    await this.shot(page, 'dashboard');

    await Promise.all([
      page.waitForURL((url) => url.pathname === '/wizard/homeserver'),
      page.getByRole('link', { name: /Continue with/ }).click(),
    ]);
    this.report.keyboard.homeserverTabsToServerName = await this.keyboardToField('f-server_name', 2);

    // Homeserver: a URL where the server name belongs is refused with a message at the field.
    await this.label('Server name').fill('https://example.org');
    this.rejecting = true;
    await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/wizard/homeserver') && r.status() === 400),
      page.getByRole('button', { name: 'Save and continue' }).click(),
    ]);
    const fieldError = page.locator('#f-server_name-note [role="alert"]');
    await fieldError.waitFor();
    this.rejecting = false;
    this.check((await fieldError.textContent()).includes('looks like a URL'), 'no field message for a URL as server name');
    this.check(await this.label('Server name').getAttribute('aria-invalid') === 'true', 'the rejected field is not aria-invalid');
    await this.shot(page, 'wizard-homeserver-error');
    await this.label('Server name').fill(o.serverName);
    await this.label('Client URL (optional)').fill(o.clientUrl);
    await this.shot(page, 'wizard-homeserver');
    await this.saveAndContinue('endpoints');
    this.step('homeserver');

    await page.getByLabel('One hostname (recommended)').check();
    await this.label('Public URL').fill(o.rtcUrl);
    this.check(!(await this.label('SFU URL').isVisible()), 'two-hostname fields are shown in one-hostname mode');
    await this.shot(page, 'wizard-endpoints');
    // Enter in a field saves and continues (it must not press "Back", the first visible button).
    const [entered] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/wizard/endpoints'),
      this.label('Public URL').press('Enter'),
    ]);
    this.check(entered.status() === 303 && entered.headers().location === '/wizard/tls',
      `Enter in the Public URL field answered ${entered.status()} → ${entered.headers().location}, not a save`);
    await page.waitForURL((url) => url.pathname === '/wizard/tls');
    this.step('endpoints');

    await page.getByLabel('A reverse proxy in front of rtcbox').check();
    await this.label('Reverse proxy').selectOption('nginx');
    this.check(!(await this.label("E-mail for Let's Encrypt").isVisible()), "the Let's Encrypt e-mail is shown for a reverse proxy");
    await this.shot(page, 'wizard-tls');
    await this.saveAndContinue('network');
    this.step('tls');

    // The ports wait behind "Ports" (open already when one differs from its default); the
    // relay range is asked in the legacy-calls step.
    const ports = page.locator('details.advanced');
    if (!(await ports.evaluate((d) => d.open))) await ports.locator('summary').click();
    for (const [name, value] of Object.entries(o.network)) {
      if (name.startsWith('relay_')) continue;
      await page.locator(`#f-${name}`).fill(String(value));
    }
    // Empty: rtcbox follows the public IP by itself; "Detect public IP" only says what it sees.
    await this.label('Fixed public IP (optional)').fill('');
    const [detectResponse] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/wizard/network') && r.request().method() === 'POST'),
      page.getByRole('button', { name: 'Detect public IP' }).click(),
    ]);
    await page.waitForLoadState();
    this.check(detectResponse.status() === 200, `"Detect public IP" answered ${detectResponse.status()}`);
    const detected = await this.label('Fixed public IP (optional)').inputValue();
    const flash = (await page.locator('[role="status"]').first().textContent())?.trim();
    this.step('network: detect public IP', { detected, flash });
    this.check(detected === '' && (flash || '').includes(`sees this machine as ${o.expectPublicIp}.`),
      `"Detect public IP" should leave the field empty (following) and name ${o.expectPublicIp}: field '${detected}', flash: ${flash}`);
    // This test's rtcbox runs with RTCBOX_NODE_IP pinned to it: enter the same fixed address.
    await this.label('Fixed public IP (optional)').fill(o.expectPublicIp);
    await this.shot(page, 'wizard-network');
    // A loopback LAN address (this test runs on one machine) is questioned: the router cannot
    // forward to it. Saved only once "Use this address anyway" is ticked.
    if (o.network.lan_ip.startsWith('127.')) {
      this.rejecting = true;
      await Promise.all([
        page.waitForResponse((r) => r.url().endsWith('/wizard/network') && r.status() === 400),
        page.getByRole('button', { name: 'Save and continue' }).click(),
      ]);
      const doubt = page.locator('#f-lan_ip-note [role="alert"]');
      await doubt.waitFor();
      this.rejecting = false;
      this.check((await doubt.textContent()).includes('is the loopback address'), 'no doubt about a loopback LAN address');
      await page.locator('#f-lan_ip').scrollIntoViewIfNeeded();
      await this.shot(page, 'wizard-network-lan-doubt');
      await page.getByLabel('Use this address anyway').check();
    }
    await this.saveAndContinue('turn');
    this.step('network');

    // The same wizard on a phone: a step must fit the screen without sideways scrolling.
    const phone = await browser.newContext({
      viewport: PHONE, colorScheme: 'light', deviceScaleFactor: 1, isMobile: true, hasTouch: true,
      storageState: await context.storageState(),
    });
    const phonePage = await phone.newPage();
    this.watch(phonePage, 'phone');
    await phonePage.goto(`${o.adminUrl}/wizard/network`);
    this.report.phone = await phonePage.evaluate(() => ({
      innerWidth: window.innerWidth, scrollWidth: document.documentElement.scrollWidth,
    }));
    await this.shot(phonePage, 'wizard-network-phone');
    await phone.close();

    // The relay range belongs to legacy calls: shown when they are on, kept when they are off.
    await page.getByLabel('On', { exact: true }).check();
    await this.label('TURN relay range: first port (UDP)').fill(String(o.network.relay_min));
    await this.label('TURN relay range: last port (UDP)').fill(String(o.network.relay_max));
    await page.getByLabel('Off', { exact: true }).check();
    this.check(!(await this.label('TURN relay range: first port (UDP)').isVisible()), 'the relay range is shown with legacy calls off');
    await this.shot(page, 'wizard-turn');
    await this.saveAndContinue('review');
    this.step('turn');

    await this.shot(page, 'wizard-review');
    await this.submit('Apply and show the configuration', '/wizard/review', '/outputs');
    this.step('review: applied');
    const snippet = await page.locator('#code-homeserver-yaml').textContent({ timeout: 5000 }).catch(() => null);
    this.report.outputs = await page.locator('pre[id^="code-"]').evaluateAll((els) => els.map((e) => e.id.slice(5)));
    this.check(snippet?.includes('max_event_delay_duration'),
      `the homeserver.yaml snippet on /outputs lacks max_event_delay_duration: ${JSON.stringify(snippet?.slice(0, 300))}`);
    // The test homeserver serves no well-known document rtcbox could read: the page says so and
    // offers the entry to add by hand and a box for the current file.
    this.check(await page.locator('#well-known-rtc-foci').isVisible(), 'no add-only well-known entry for an unread document');
    this.check(await page.getByLabel('Your current /.well-known/matrix/client (optional)').isVisible(), 'no box to paste the current well-known');
    await this.shot(page, 'outputs');

    // Opening the page runs nothing: the checks go out when "Run the checks" is pressed, and
    // the page's script shows each result as it arrives (server-sent events from /verify/run).
    await Promise.all([
      page.waitForURL((url) => url.pathname === '/verify'),
      page.getByRole('link', { name: 'Verify', exact: true }).first().click(),
    ]);
    this.check((await page.locator('#check-status').textContent()).includes('Not checked yet'),
      'the verification page ran checks on opening');
    if (o.accessToken) await page.getByLabel('Matrix access token (optional)').fill(o.accessToken);
    const [verified] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/verify/run') && r.request().method() === 'POST', { timeout: VERIFY_TIMEOUT_MS }),
      page.getByRole('button', { name: 'Run the checks' }).click(),
    ]);
    this.check(verified.status() === 200, `"Run the checks" answered ${verified.status()}`);
    await page.waitForFunction(() => document.getElementById('check-status')?.textContent.includes('Checked at'), null, { timeout: VERIFY_TIMEOUT_MS });
    this.check(await page.locator('li.check.running').count() === 0, 'a check is still shown as running after the run');
    if (o.accessToken) {
      this.check(await page.getByLabel('Matrix access token (optional)').inputValue() === o.accessToken,
        'the access token field was cleared by running the checks');
    }
    this.report.checks = await page.locator('li.check').evaluateAll((els) => els.map((e) => ({
      status: e.classList[1], title: e.querySelector('h2')?.textContent.trim(),
    })));
    this.step('verify', { checks: this.report.checks.length });
    this.check(this.report.checks.length > 0, 'the verification page shows no check results');
    await this.shot(page, 'verify');
    await this.testCall(browser, page);
    await this.logs(page);
    const session = await context.storageState();
    await context.close();

    await this.tour(browser, session, 'phone-dark', PHONE, 'dark');
    await this.tour(browser, session, 'desktop-dark', DESKTOP, 'dark');
    const broken = Object.entries(this.report.layout).filter(([, problems]) => problems.length);
    this.check(!broken.length, `layout problems: ${JSON.stringify(Object.fromEntries(broken))}`);
  }
}

async function main() {
  const report = { ok: false, steps: [], screenshots: [], keyboard: {}, layout: {}, console: [], errors: [] };
  let browser = null;
  let code = 2;
  const finish = async (exitCode) => {
    if (browser) await browser.close().catch(() => {});
    report.totalMs = Date.now() - t0;
    printReportAndExit(report, exitCode);
  };
  let opts;
  try {
    opts = { prefix: 'admin', deadlineMs: 120000, expectPublicIp: '127.0.0.1', ...readConfig() };
  } catch (e) {
    report.errors.push(`config: ${e.message}`);
    return finish(2);
  }
  const deadline = setTimeout(() => {
    report.errors.push(`runner deadline of ${opts.deadlineMs} ms exceeded`);
    finish(1);
  }, opts.deadlineMs);
  deadline.unref?.();
  const executablePath = process.env.RTCBOX_CHROMIUM || opts.chromium || '/usr/bin/chromium';
  const walk = new Walk(opts, report);
  try {
    if (!existsSync(executablePath)) throw new Error(`no Chromium at ${executablePath} (apt-get install chromium)`);
    mkdirSync(opts.outDir, { recursive: true });
    browser = await chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS, timeout: 30000 });
    report.chromium = browser.version();
    code = 1;
    await walk.run(browser);
    report.ok = true;
    code = 0;
  } catch (e) {
    report.errors.push(e.stack ?? String(e));
    log('failed:', e.message);
    if (walk.page && !walk.page.isClosed()) {
      report.failedAt = walk.page.url();
      report.failedPage = (await walk.page.locator('main').innerText().catch(() => '')).slice(0, 3000);
      await walk.shot(walk.page, 'failure').catch(() => {});
    }
  }
  clearTimeout(deadline);
  return finish(code);
}

main();
