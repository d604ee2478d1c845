// Shared browser steps: launch Debian's Chromium headless, sign in, read and answer the
// consent page, and catch the redirect back to the client.
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';

export async function launch(profileDir) {
  return chromium.launchPersistentContext(profileDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-quic'],
  });
}

// Click and wait for the next page. A navigation that fails only because nothing listens at
// the client's redirect URI is fine: the redirect itself was seen.
async function submit(page, selector, isCallback = () => false) {
  try {
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click(selector)]);
  } catch (e) {
    if (!isCallback()) throw e;
  }
}

// Save a picture of the page for a person to look at. Nothing asserts on it, so a capture
// the headless browser refuses ("Unable to capture screenshot", seen once under load) is
// retried once after the page settles, then reported and skipped rather than failing the run.
async function shot(page, path) {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await page.waitForLoadState('load');
      await page.screenshot({ path, fullPage: true });
      return;
    } catch (e) {
      if (attempt === 1) console.error(`screenshot ${path} skipped: ${e.message.split('\n')[0]}`);
      else await page.waitForTimeout(250);
    }
  }
}

async function signIn(page, username, password, done) {
  await page.fill('#username', username);
  await page.fill('#password', password);
  await submit(page, '#signin', done);
}

// RFC 4648 base32 (no padding) to bytes.
function base32(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0, value = 0;
  const out = [];
  for (const c of text.replace(/=+$/, '')) {
    value = (value << 5) | alphabet.indexOf(c);
    bits += 5;
    if (bits >= 8) { bits -= 8; out.push((value >>> bits) & 0xff); }
  }
  return Buffer.from(out);
}

// An authenticator app (RFC 6238: HMAC-SHA-1, 30 s, 6 digits), computed here: never the same
// time step twice, as a real app's user waits for the next code.
export function authenticator() {
  let secret = null;
  let lastStep = 0;
  return {
    get enrolled() { return secret !== null; },
    learn(base32Secret) { secret = base32(base32Secret.trim()); },
    async code() {
      const { createHmac } = await import('node:crypto');
      const step = Math.max(Math.floor(Date.now() / 30000), lastStep + 1);
      lastStep = step;
      const counter = Buffer.alloc(8);
      counter.writeBigUInt64BE(BigInt(step));
      const h = createHmac('sha1', secret).update(counter).digest();
      const o = h[19] & 0xf;
      const bin = ((h[o] & 0x7f) << 24) | (h[o + 1] << 16) | (h[o + 2] << 8) | h[o + 3];
      return String(bin % 1_000_000).padStart(6, '0');
    },
  };
}

// Open `url`; sign in (with the second factor, or setting one up, when `mfa`, an
// `authenticator()`, is given) and answer consent as needed; return the redirect to the client.
export async function authorize(ctx, url, { username, password, redirectPrefix, decision = 'approve', screenshot, mfa, untick = [] }) {
  const page = await ctx.newPage();
  let callback = null;
  // Every hop of a redirect chain is a request; the one to the client is the answer.
  page.on('request', (r) => {
    if (r.url().startsWith(redirectPrefix)) callback = r.url();
  });
  const done = () => callback !== null;
  try {
    await page.goto(url, { waitUntil: 'load' });
  } catch (e) {
    if (!done()) throw e;
  }
  let consent = null;
  let asker = null;
  let signedIn = false;
  for (let step = 0; step < 12 && !callback; step++) {
    if (await page.locator('#signin').count()) {
      if (signedIn) throw new Error('sign-in failed: ' + (await page.locator('#error').textContent()));
      asker = await whoAsks(page);
      if (screenshot) await shot(page, screenshot.replace(/\.png$/, '-signin.png'));
      await signIn(page, username, password, done);
      signedIn = true;
    } else if (mfa && (await page.locator('#secret').count())) {
      // Signing in here needs a second factor the user had not set up: set one up now.
      mfa.learn(await page.locator('#secret').textContent());
      mfa.enrolledAtSignIn = true;
      await page.fill('#code', await mfa.code());
      await submit(page, '#confirm', done);
    } else if (mfa && (await page.locator('#continue').count())) {
      mfa.recoveryCodes = await page.locator('.recovery-code').allTextContents();
      await submit(page, '#continue', done);
    } else if (mfa && (await page.locator('#verify').count())) {
      await page.fill('#code', await mfa.code());
      await submit(page, '#verify', done);
    } else if (await page.locator('#approve').count()) {
      consent = {
        client: (await page.locator('#client-name').textContent()).trim(),
        unverified: (await page.locator('#unverified').count()) > 0,
        resources: await page.locator('.resource-name').allTextContents(),
        resourceUris: await page.locator('.resource-uri').allTextContents(),
        scopes: await page.locator('.scope').evaluateAll((els) => els.map((e) => e.dataset.scope)),
        // The tools each scope lets the app use, as the page lists them under it.
        tools: await page.locator('.scope').evaluateAll((els) => Object.fromEntries(els.map((e) =>
          [e.dataset.scope, [...e.querySelectorAll('.tool')].map((t) => t.textContent.trim())]))),
        redirectHost: (await page.locator('#redirect-host').textContent()).trim(),
        title: await page.title(),
      };
      // The user unticks what they do not want to allow.
      for (const scope of untick) await page.uncheck(`input[name="keep:${scope}"]`);
      if (screenshot) await shot(page, screenshot);
      await submit(page, decision === 'deny' ? '#deny' : '#approve', done);
    } else if (await page.locator('#error').count()) {
      throw new Error('error page: ' + (await page.locator('#error').textContent()));
    } else {
      await page.waitForTimeout(100);
    }
  }
  if (!callback) throw new Error('never sent back to the client; last page ' + page.url());
  return { callback, consent, signedIn, asker };
}

// Who the sign-in page says is asking (null when it names nobody).
async function whoAsks(page) {
  if (!(await page.locator('#client-name').count())) return null;
  return {
    client: (await page.locator('#client-name').textContent()).trim(),
    unverified: (await page.locator('#unverified').count()) > 0,
    redirectHost: (await page.locator('#redirect-host').textContent()).trim(),
  };
}

// On the security page (signing in first if asked): change the password through its form and
// report what the page then shows.
export async function changePassword(ctx, url, { username, password, newPassword, screenshot }) {
  const page = await ctx.newPage();
  await page.goto(url, { waitUntil: 'load' });
  if (await page.locator('#signin').count()) await signIn(page, username, password);
  if (await page.locator('#current-password').count()) await page.fill('#current-password', password);
  await page.fill('#new-password', newPassword);
  await page.fill('#new-password-again', newPassword);
  await submit(page, '#change-password');
  if (screenshot) await shot(page, screenshot);
  return {
    notice: (await page.locator('#notice').count()) ? (await page.locator('#notice').textContent()).trim() : null,
    error: (await page.locator('#error').count()) ? (await page.locator('#error').textContent()).trim() : null,
    sessions: await page.locator('.session').count(),
    thisBrowser: await page.locator('.session[data-this]').count(),
  };
}

// Sign in to the connected-apps page and revoke the first app listed.
export async function revokeFirst(ctx, url, { username, password }) {
  const page = await ctx.newPage();
  await page.goto(url, { waitUntil: 'load' });
  if (await page.locator('#signin').count()) await signIn(page, username, password);
  const before = await page.locator('.app').count();
  const clients = await page.locator('.app').evaluateAll((els) => els.map((e) => e.dataset.clientId));
  await submit(page, '.revoke >> nth=0');
  const after = await page.locator('.app').count();
  return { before, after, clients };
}

// The delegation chains the connected-apps page shows: each hop's id, its path of names,
// who acts, and whether it is cut.
async function readChains(page) {
  return page.locator('.chain').evaluateAll((els) => els.map((e) => ({
    hop: e.dataset.hop,
    path: [...e.querySelectorAll('.link')].map((l) => l.textContent.trim()),
    text: e.innerText,
    cut: e.classList.contains('is-cut'),
    app: e.closest('.app')?.dataset.clientId ?? null,
  })));
}

// Sign in to the connected-apps page, read the chains, cut the hop `hop` with its button,
// and read them again.
export async function cutChain(ctx, url, { username, password, hop, screenshot }) {
  const page = await ctx.newPage();
  await page.goto(url, { waitUntil: 'load' });
  if (await page.locator('#signin').count()) await signIn(page, username, password);
  const before = await readChains(page);
  if (screenshot) await shot(page, screenshot);
  await submit(page, `.chain[data-hop="${hop}"] button.cut`);
  const after = await readChains(page);
  return { before, after };
}

// Open a device verification URL (with the user code in it), sign in if asked, approve.
export async function approveDevice(ctx, url, { username, password }) {
  const page = await ctx.newPage();
  await page.goto(url, { waitUntil: 'load' });
  if (await page.locator('#signin').count()) await signIn(page, username, password);
  const client = (await page.locator('#client-name').textContent()).trim();
  await submit(page, '#approve');
  const result = (await page.locator('#device-result').textContent()).trim();
  return { client, result };
}

// A client's loopback redirect URI (RFC 8252 §7.3): a listener on 127.0.0.1 with an ephemeral
// port. `next()` resolves with the full URL of the next request that reaches it.
export async function loopbackReceiver(path = '/callback') {
  const http = await import('node:http');
  const waiting = [];
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('Signed in. You can close this window.');
    const url = `http://127.0.0.1:${server.address().port}${req.url}`;
    if (new URL(url).pathname === path) waiting.shift()?.(url);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    redirectUri: `http://127.0.0.1:${server.address().port}${path}`,
    next: () => new Promise((resolve) => waiting.push(resolve)),
    close: () => server.close(),
  };
}

// The MCP TypeScript SDK's OAuthClientProvider with the user's part in Chromium: registers a
// public client for the loopback receiver, sends the browser through sign-in and consent
// (`mfa`, an authenticator(), when a second factor comes up), and keeps the code that came
// back for `transport.finishAuth(provider.takeCode())`. `extra` parameters are added to the
// next authorization request (`acr_values`, `max_age`, a wider `scope`).
export class BrowserProvider {
  constructor({ ctx, receiver, username, password, mfa, clientName }) {
    Object.assign(this, { ctx, receiver, username, password, mfa, clientName });
    this.authorizations = [];
    this.pendingCode = null;
    this.extra = {};
  }
  get redirectUrl() { return this.receiver.redirectUri; }
  get clientMetadata() {
    return {
      client_name: this.clientName,
      redirect_uris: [this.receiver.redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }
  state() { return (this._state = randomBytes(16).toString('base64url')); }
  clientInformation() { return this._client; }
  saveClientInformation(info) { this._client = info; }
  tokens() { return this._tokens; }
  saveTokens(tokens) { this._tokens = tokens; }
  saveCodeVerifier(v) { this._verifier = v; }
  codeVerifier() { return this._verifier; }
  invalidateCredentials(scope) {
    if (scope === 'all' || scope === 'client') this._client = undefined;
    if (scope === 'all' || scope === 'tokens') this._tokens = undefined;
  }
  async redirectToAuthorization(url) {
    for (const [k, v] of Object.entries(this.extra)) url.searchParams.set(k, v);
    this.extra = {};
    const arrived = this.receiver.next();
    const seen = await authorize(this.ctx, url.href, {
      username: this.username, password: this.password, redirectPrefix: this.receiver.redirectUri, mfa: this.mfa,
    });
    const back = new URL(await arrived);
    if (back.searchParams.get('state') !== this._state) throw new Error('state mismatch on the redirect');
    this.authorizations.push({
      scope: url.searchParams.get('scope'),
      resource: url.searchParams.get('resource'),
      codeChallengeMethod: url.searchParams.get('code_challenge_method'),
      acrValues: url.searchParams.get('acr_values'),
      maxAge: url.searchParams.get('max_age'),
      consent: seen.consent,
      signedIn: seen.signedIn,
      iss: back.searchParams.get('iss'),
      error: back.searchParams.get('error'),
      errorDescription: back.searchParams.get('error_description'),
    });
    this.pendingCode = back.searchParams.get('code');
  }
  takeCode() {
    const code = this.pendingCode;
    if (!code) throw new Error('no authorization code came back');
    this.pendingCode = null;
    return code;
  }
}
