#!/usr/bin/env node
// Browser end-to-end runner: livekit-client in headless Debian Chromium, driven by playwright-core.
//
//   node run.mjs CONFIG.json        (or the config as JSON on stdin, or `--selftest`)
//
// Config: {
//   "wsUrl": "ws://127.0.0.1:PORT",                  the SFU's signaling URL
//   "peers": [{"identity": "alice", "token": "JWT"}, ...],   one page each (two for a call);
//            a peer's "e2eeKey": "..." turns on livekit-client's E2EE with that shared key
//   "profile": "element-call" | "default",           Room options: Element Call's or the SDK's
//   "roomOptions": {...}, "publishDefaults": {...}, "connectOptions": {...}   overrides
//   "observeMs": 6000,        how long to watch media after every peer has subscribed
//   "connectTimeoutMs": 20000, "subscribeTimeoutMs": 20000, "deadlineMs": 90000,
//   "pageLoadMs": 10000,      how long a page may take to load (the page and livekit-client's
//                             bundle come over the test's path, which may be a slow one)
//   "minFrames": 10, "minAudioPackets": 10,   what the runner's own verdict (`ok`) requires
//   "logLevel": "info",       livekit-client's log level (its logs land in each page's console)
//   "chromium": "/usr/bin/chromium",  the browser (a wrapper that starts it in a namespace)
//   "pageHost": "127.0.0.1",  the loopback or test-namespace address the page is served on
//   "qualitySwitch": {"subscriber": ID, "publisher": ID, "steps": ["low", "high"], "timeoutMs": 30000}
//                             after observing: the subscriber asks for each quality of the
//                             publisher's camera in turn; each step polls both pages' stats every
//                             250 ms until the received frame width is the publisher's width for
//                             that layer (q for low, h for medium, f for high) or the timeout, and
//                             records the samples and the time it took (report.qualitySwitches)
// }
// Prints one JSON document on stdout (progress goes to stderr) and exits 0 when the call worked
// (every peer connected, saw every other peer, and decoded video frames and received audio packets
// from each of them), 1 when it did not, 2 when the runner itself could not run.
//
// The page is served from its own loopback HTTP server, so it is cross-origin to the SFU, as
// Element Call is. Chromium is Debian's (/usr/bin/chromium, or $RTCBOX_CHROMIUM); nothing is
// downloaded.
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { readFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { printReportAndExit } from './report.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const t0 = Date.now();
const elapsed = () => Date.now() - t0;
const log = (...args) => console.error(`[${(elapsed() / 1000).toFixed(1)}s]`, ...args);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
// Tokens and join requests make every line kilobytes long; keep the start of a join request only.
const redact = (text) => text
  .replace(/access_token=[^&'"\s]+/g, 'access_token=…')
  .replace(/join_request=([^&'"\s]{0,24})[^&'"\s]*/g, 'join_request=$1…');

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
];

function readConfig() {
  const arg = process.argv[2];
  if (arg === '--selftest') return { selftest: true, peers: [] };
  const text = arg && arg !== '-' ? readFileSync(arg, 'utf8') : readFileSync(0, 'utf8');
  return JSON.parse(text);
}

const FILES = {
  '/': ['page.html', 'text/html; charset=utf-8'],
  '/page.js': ['page.js', 'text/javascript; charset=utf-8'],
  '/livekit-client.umd.js': ['node_modules/livekit-client/dist/livekit-client.umd.js', 'text/javascript; charset=utf-8'],
  '/livekit-client.umd.js.map': ['node_modules/livekit-client/dist/livekit-client.umd.js.map', 'application/json'],
  // The frame cryptor worker of livekit-client's E2EE (pages given an `e2eeKey`).
  '/livekit-client.e2ee.worker.js': ['node_modules/livekit-client/dist/livekit-client.e2ee.worker.js', 'text/javascript; charset=utf-8'],
};

function servePage(host) {
  const server = createServer(async (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    const file = FILES[path];
    if (path === '/favicon.ico') {
      res.writeHead(204).end();
      return;
    }
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(join(here, file[0]));
      res.writeHead(200, { 'content-type': file[1], 'cache-control': 'no-store' }).end(body);
    } catch (e) {
      res.writeHead(500).end(String(e));
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve(server));
  });
}

// Resolves to the promise's value, or to `fallback()` after `ms`.
function within(promise, ms, fallback) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((resolve) => { timer = setTimeout(() => resolve(fallback()), ms); }),
  ]);
}

class Peer {
  constructor(spec, index) {
    this.identity = spec.identity ?? `peer${index}`;
    this.token = spec.token;
    this.e2eeKey = spec.e2eeKey;
    this.console = [];
    this.network = [];
    this.runnerErrors = [];
    this.result = {
      identity: this.identity, connected: false, published: false, remoteIdentities: [],
      videoFramesDecoded: [], audioPacketsReceived: [], audioSamplesReceived: [],
      errors: [],
    };
  }

  async open(browser, pageUrl, loadMs) {
    this.context = await browser.newContext({ viewport: { width: 800, height: 600 } });
    await this.context.grantPermissions(['camera', 'microphone'], { origin: new URL(pageUrl).origin });
    this.page = await this.context.newPage();
    const at = () => elapsed();
    this.page.on('console', (m) => {
      this.console.push({ t: at(), type: m.type(), text: redact(m.text()).slice(0, 2000) });
      if (this.console.length > 400) this.console.splice(0, this.console.length - 400);
    });
    this.page.on('pageerror', (e) => this.runnerErrors.push(`page error: ${e.message}`));
    this.page.on('crash', () => this.runnerErrors.push('page crashed'));
    this.page.on('websocket', (ws) => {
      const entry = { t: at(), websocket: redact(ws.url()) };
      this.network.push(entry);
      ws.on('socketerror', (e) => { entry.error = String(e); });
      ws.on('close', () => { entry.closedAt = at(); });
    });
    this.page.on('response', (r) => {
      const url = r.url();
      if (url.startsWith(pageUrl)) return;
      this.network.push({
        t: at(), request: `${r.request().method()} ${redact(url)}`,
        status: r.status(), cors: r.headers()['access-control-allow-origin'] ?? null,
      });
    });
    this.page.on('requestfailed', (r) => {
      this.network.push({ t: at(), request: `${r.method()} ${redact(r.url())}`, failed: r.failure()?.errorText });
    });
    await this.page.goto(pageUrl, { timeout: loadMs });
    await this.page.waitForFunction(() => window.rtcbox !== undefined, null, { timeout: loadMs });
  }

  call(fn, arg, ms, what) {
    return within(this.page.evaluate(fn, arg), ms, () => {
      const message = `${what} did not finish within ${ms} ms`;
      this.runnerErrors.push(message);
      return { ok: false, error: { message } };
    });
  }

  async collect() {
    if (!this.page) return;
    try {
      const [events, errors, state] = await within(this.page.evaluate(() => [
        window.rtcbox.events(), window.rtcbox.errors(), window.rtcbox.state()]), 5000, () => [[], [], null]);
      this.result.events = events;
      this.result.state = state;
      this.result.errors = [...errors, ...this.runnerErrors];
    } catch (e) {
      this.result.errors = [...this.runnerErrors, `collecting page state failed: ${e.message}`];
    }
    this.result.consoleErrors = this.console.filter((m) => m.type === 'error' || m.type === 'warning')
      .map((m) => `${m.type}: ${m.text}`).slice(-50);
    this.result.console = this.console.slice(-200);
    this.result.network = this.network.slice(-100);
  }
}

// Known ways for a LiveKit server to lose the browser SDK, recognised from what the page saw.
function diagnose(peers) {
  const hints = new Set();
  for (const p of peers) {
    for (const m of p.console) {
      const cors = /Access to fetch at '[^']*?(\/rtc(?:\/v1)?\/validate)[^']*' from origin .* blocked by CORS policy/.exec(m.text);
      if (cors) {
        hints.add(`${cors[1]} answered without Access-Control-Allow-Origin: the SDK's fetch fails, it reports ` +
          'ServerUnreachable and never falls back from /rtc/v1 to /rtc (CORS is needed on error responses too)');
      }
    }
    for (const n of p.network) {
      if (n.request?.includes('/rtc/v1/validate') && n.status && n.status !== 404 && n.status !== 200) {
        hints.add(`/rtc/v1/validate answered ${n.status}: only 404 makes the SDK fall back to /rtc`);
      }
    }
  }
  return [...hints];
}

// For each remote identity, sums the counters of its video and audio inbound streams.
function totals(sample, identity) {
  const sum = (kind, key) => sample.inbound
    .filter((s) => s.identity === identity && s.kind === kind)
    .reduce((acc, s) => acc + (s[key] ?? 0), 0);
  return {
    framesDecoded: sum('video', 'framesDecoded'),
    audioPackets: sum('audio', 'packetsReceived'),
    audioSamples: sum('audio', 'totalSamplesReceived'),
  };
}

// The subscriber asks for each quality of the publisher's camera in turn and watches, through
// both browsers' own stats, for the frames it decodes to have that layer's width.
async function switchQualities(peers, spec) {
  const subscriber = peers.find((p) => p.identity === spec.subscriber);
  const publisher = peers.find((p) => p.identity === spec.publisher);
  const rids = { low: 'q', medium: 'h', high: 'f' };
  const steps = [];
  for (const quality of spec.steps) {
    const startedAt = Date.now();
    const tracks = await subscriber.page.evaluate(([id, q]) => window.rtcbox.setVideoQuality(id, q),
      [publisher.identity, quality]);
    const step = { quality, rid: rids[quality], tracks, reached: false, samples: [] };
    while (Date.now() - startedAt < (spec.timeoutMs ?? 30000)) {
      const [mine, theirs] = await Promise.all([subscriber, publisher].map((p) => within(
        p.page.evaluate(() => window.rtcbox.stats()), 5000, () => ({ inbound: [], outbound: [] }))));
      const inbound = mine.inbound.find((s) => s.identity === publisher.identity && s.kind === 'video');
      const layers = Object.fromEntries(theirs.outbound.filter((s) => s.kind === 'video' && s.rid)
        .map((s) => [s.rid, {
          width: s.frameWidth, active: s.active, framesEncoded: s.framesEncoded, pliCount: s.pliCount,
          limitation: s.qualityLimitationReason,
        }]));
      const sample = {
        ms: Date.now() - startedAt, width: inbound?.frameWidth, framesDecoded: inbound?.framesDecoded,
        keyFramesDecoded: inbound?.keyFramesDecoded, layers,
      };
      step.samples.push(sample);
      if (step.samples.length > 200) step.samples.splice(1, 1);
      const wanted = layers[step.rid];
      if (inbound?.frameWidth && wanted?.active !== false && wanted?.width === inbound.frameWidth) {
        step.reached = true;
        step.ms = sample.ms;
        break;
      }
      await sleep(250);
    }
    step.last = step.samples[step.samples.length - 1];
    log(`quality ${quality}: ${step.reached ? `width ${step.last.width} after ${step.ms} ms` : 'not reached'}`,
      JSON.stringify(step.last));
    steps.push(step);
  }
  return steps;
}

async function main() {
  const config = readConfig();
  const opts = {
    profile: 'element-call', observeMs: 6000, connectTimeoutMs: 20000, subscribeTimeoutMs: 20000,
    deadlineMs: 90000, minFrames: 10, minAudioPackets: 10, logLevel: 'info', pageHost: '127.0.0.1',
    pageLoadMs: 10000,
    ...config,
  };
  const executablePath = opts.chromium || process.env.RTCBOX_CHROMIUM || '/usr/bin/chromium';
  const peers = (opts.peers ?? []).map((p, i) => new Peer(p, i));
  const report = {
    ok: false, versions: {}, chromium: executablePath, page: null, steps: [], peers: [], errors: [],
  };
  const step = (name, startedAt, extra = {}) => {
    report.steps.push({ name, ms: Date.now() - startedAt, ...extra });
    log(`${name} (${Date.now() - startedAt} ms)`, Object.keys(extra).length ? JSON.stringify(extra) : '');
  };

  let browser = null;
  let server = null;
  let finished = false;
  const finish = async (code) => {
    if (finished) return;
    finished = true;
    await within(Promise.all(peers.map((p) => p.collect())), 8000, () => null);
    report.peers = peers.map((p) => p.result);
    report.hints = diagnose(peers);
    report.totalMs = elapsed();
    // Playwright kills the browser it launched when this process exits, should close() hang.
    if (browser) await within(browser.close().catch(() => {}), 5000, () => null);
    server?.close();
    printReportAndExit(report, code);
  };
  const deadline = setTimeout(() => {
    report.errors.push(`runner deadline of ${opts.deadlineMs} ms exceeded`);
    log('deadline exceeded');
    finish(1);
  }, opts.deadlineMs);
  deadline.unref?.();

  try {
    if (!existsSync(executablePath)) throw new Error(`no Chromium at ${executablePath} (apt-get install chromium)`);
    if (!existsSync(join(here, FILES['/livekit-client.umd.js'][0]))) {
      throw new Error('livekit-client is not installed: run `npm ci` in tests/browser');
    }
    server = await servePage(opts.pageHost);
    const pageUrl = `http://${opts.pageHost}:${server.address().port}/`;
    report.page = pageUrl;

    let startedAt = Date.now();
    browser = await chromium.launch({
      executablePath, headless: true, timeout: 30000,
      // Camera and microphone need a secure context: a page served on a test namespace's
      // address is declared one.
      args: opts.pageHost === '127.0.0.1' ? CHROMIUM_ARGS
        : [...CHROMIUM_ARGS, `--unsafely-treat-insecure-origin-as-secure=${pageUrl.slice(0, -1)}`],
      // Playwright mutes audio output by default; play the received audio as a user would hear it.
      ignoreDefaultArgs: ['--mute-audio'],
    });
    report.versions.chromium = browser.version();
    report.versions.playwright = JSON.parse(readFileSync(join(here, 'node_modules/playwright-core/package.json'), 'utf8')).version;
    report.chromiumArgs = CHROMIUM_ARGS;
    step('launch chromium', startedAt, { version: report.versions.chromium });

    if (opts.selftest) {
      const peer = new Peer({ identity: 'selftest' }, 0);
      peers.push(peer);
      startedAt = Date.now();
      await peer.open(browser, pageUrl, opts.pageLoadMs);
      report.versions.livekitClient = await peer.page.evaluate(() => window.rtcbox.version);
      report.versions.livekitProtocol = await peer.page.evaluate(() => window.rtcbox.protocolVersion);
      report.localTracks = await peer.call(() => window.rtcbox.localTracks(), null, 15000, 'createLocalTracks');
      step('selftest: page + createLocalTracks', startedAt);
      startedAt = Date.now();
      report.loopback = await peer.call((ms) => window.rtcbox.loopback(ms), 3000, 15000, 'loopback call');
      step('selftest: loopback call in one page', startedAt);
      const kinds = Array.isArray(report.localTracks) ? report.localTracks.map((t) => `${t.kind}:${t.readyState}`) : [];
      const grew = (kind, key) => {
        const count = (list) => (list ?? []).filter((s) => s.kind === kind).reduce((n, s) => n + (s[key] ?? 0), 0);
        return count(report.loopback?.last) - count(report.loopback?.first);
      };
      report.loopbackGrowth = { framesDecoded: grew('video', 'framesDecoded'), audioPackets: grew('audio', 'packetsReceived') };
      report.ok = kinds.includes('audio:live') && kinds.includes('video:live')
        && report.loopbackGrowth.framesDecoded >= opts.minFrames && report.loopbackGrowth.audioPackets >= opts.minAudioPackets;
      clearTimeout(deadline);
      return finish(report.ok ? 0 : 1);
    }

    if (!opts.wsUrl || peers.length < 1 || peers.some((p) => !p.token)) {
      throw new Error('config needs wsUrl and peers [{identity, token}]');
    }

    startedAt = Date.now();
    await Promise.all(peers.map((p) => p.open(browser, pageUrl, opts.pageLoadMs)));
    report.versions.livekitClient = await peers[0].page.evaluate(() => window.rtcbox.version);
    await Promise.all(peers.map((p) => p.page.evaluate((l) => window.rtcbox.setLogLevel(l), opts.logLevel)));
    step('open pages', startedAt);

    // 1. Signaling + transports: room.connect resolves once the SDK considers itself connected.
    startedAt = Date.now();
    const connectArgs = {
      profile: opts.profile, roomOptions: opts.roomOptions, publishDefaults: opts.publishDefaults,
      connectOptions: opts.connectOptions,
    };
    const connected = await Promise.all(peers.map((p) => p.call(
      ([url, token, o]) => window.rtcbox.connect(url, token, o),
      [opts.wsUrl, p.token, { ...connectArgs, e2eeKey: p.e2eeKey }], opts.connectTimeoutMs, 'room.connect')));
    connected.forEach((c, i) => {
      peers[i].result.connected = !!c.ok;
      peers[i].result.connect = c;
    });
    step('connect', startedAt, { connected: connected.map((c) => !!c.ok) });
    if (!connected.every((c) => c.ok)) {
      report.errors.push('not every peer connected; see peers[].errors, peers[].network and peers[].console');
      clearTimeout(deadline);
      return finish(1);
    }

    // 2. Publish the fake camera and microphone.
    startedAt = Date.now();
    const published = await Promise.all(peers.map((p) => p.call(
      () => window.rtcbox.publish(), null, opts.connectTimeoutMs, 'enableCameraAndMicrophone')));
    published.forEach((r, i) => { peers[i].result.published = !!r.ok; });
    step('publish camera + microphone', startedAt, { published: published.map((r) => !!r.ok) });

    // 3. Wait until every peer has subscribed to every other peer's camera and microphone.
    startedAt = Date.now();
    const everyone = peers.map((p) => p.identity);
    const subscribedAll = async (peer) => {
      const s = await peer.page.evaluate(() => window.rtcbox.state());
      peer.result.remoteIdentities = s.remote.map((r) => r.identity).sort();
      return everyone.filter((id) => id !== peer.identity).every((id) => {
        const remote = s.remote.find((r) => r.identity === id);
        const has = (kind) => remote?.tracks.some((t) => t.kind === kind && t.subscribed);
        return has('video') && has('audio');
      });
    };
    let allSubscribed = false;
    while (Date.now() - startedAt < opts.subscribeTimeoutMs) {
      const states = await Promise.all(peers.map(subscribedAll));
      if (states.every(Boolean)) { allSubscribed = true; break; }
      await sleep(250);
    }
    step('subscribe', startedAt, { allSubscribed, remoteIdentities: peers.map((p) => p.result.remoteIdentities) });
    if (!allSubscribed) report.errors.push('not every peer subscribed to every other peer\'s camera and microphone in time');

    // 4. Watch the media flow: sample stats now, then once a second for observeMs.
    startedAt = Date.now();
    const samples = peers.map(() => []);
    const sampleAll = async () => {
      const s = await Promise.all(peers.map((p) => within(
        p.page.evaluate(() => window.rtcbox.stats()), 5000, () => ({ t: null, inbound: [], outbound: [], error: 'stats timed out' }))));
      s.forEach((x, i) => samples[i].push(x));
    };
    await sampleAll();
    while (Date.now() - startedAt < opts.observeMs) {
      await sleep(1000);
      await sampleAll();
    }
    step('observe media', startedAt, { samples: samples[0].length });
    // What each page knows of the call before leaving (leaving clears it): tracks, encryption.
    await Promise.all(peers.map(async (p) => {
      p.result.stateBeforeLeave = await within(p.page.evaluate(() => window.rtcbox.state()), 5000, () => null);
    }));

    let ok = allSubscribed;
    peers.forEach((peer, i) => {
      const first = samples[i][0];
      const last = samples[i][samples[i].length - 1];
      const others = everyone.filter((id) => id !== peer.identity);
      peer.result.fromPeers = {};
      for (const id of others) {
        const a = totals(first, id);
        const b = totals(last, id);
        peer.result.fromPeers[id] = {
          videoFramesDecoded: [a.framesDecoded, b.framesDecoded],
          audioPacketsReceived: [a.audioPackets, b.audioPackets],
          audioSamplesReceived: [a.audioSamples, b.audioSamples],
        };
        if (b.framesDecoded - a.framesDecoded < opts.minFrames) {
          ok = false;
          report.errors.push(`${peer.identity} decoded ${b.framesDecoded - a.framesDecoded} video frames from ${id} in ${opts.observeMs} ms (want ≥ ${opts.minFrames})`);
        }
        if (b.audioPackets - a.audioPackets < opts.minAudioPackets) {
          ok = false;
          report.errors.push(`${peer.identity} received ${b.audioPackets - a.audioPackets} audio packets from ${id} in ${opts.observeMs} ms (want ≥ ${opts.minAudioPackets})`);
        }
      }
      // With two peers, the per-peer numbers are also the page's totals.
      const sumOver = (sample, key) => others.reduce((acc, id) => acc + totals(sample, id)[key], 0);
      peer.result.videoFramesDecoded = [sumOver(first, 'framesDecoded'), sumOver(last, 'framesDecoded')];
      peer.result.audioPacketsReceived = [sumOver(first, 'audioPackets'), sumOver(last, 'audioPackets')];
      peer.result.audioSamplesReceived = [sumOver(first, 'audioSamples'), sumOver(last, 'audioSamples')];
      peer.result.lastStats = last;
      // Per sample: each received video stream's width, frames decoded, bytes, loss and NACKs,
      // and the audio packets received.
      peer.result.timeline = samples[i].map((sample) => ({
        t: sample.t,
        video: sample.inbound.filter((v) => v.kind === 'video')
          .map((v) => [v.frameWidth, v.framesDecoded, v.bytesReceived, v.packetsLost, v.nackCount]),
        audioPackets: sample.inbound.filter((a) => a.kind === 'audio').reduce((n, a) => n + (a.packetsReceived ?? 0), 0),
      }));
    });
    if (!peers.every((p) => p.result.connected && p.result.published)) ok = false;

    if (opts.qualitySwitch) report.qualitySwitches = await switchQualities(peers, opts.qualitySwitch);

    // 5. Leave cleanly (the SFU sees a LeaveRequest), so its logs end the way a real call does.
    startedAt = Date.now();
    await Promise.all(peers.map((p) => within(p.page.evaluate(() => window.rtcbox.disconnect()), 5000, () => null)));
    step('disconnect', startedAt);

    report.ok = ok && report.errors.length === 0;
    clearTimeout(deadline);
    return finish(report.ok ? 0 : 1);
  } catch (e) {
    report.errors.push(`runner: ${e.stack ?? e}`);
    log('runner error:', e.message);
    clearTimeout(deadline);
    return finish(2);
  }
}

main();
