// Shared browser steps: launch Debian's Chromium headless, sign in, read and answer the
// consent page, and catch the redirect back to the client.
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

async function signIn(page, username, password, done) {
  await page.fill('#username', username);
  await page.fill('#password', password);
  await submit(page, '#signin', done);
}

// Open `url`; sign in and answer consent as needed; return the redirect to the client.
export async function authorize(ctx, url, { username, password, redirectPrefix, decision = 'approve', screenshot }) {
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
  let signedIn = false;
  for (let step = 0; step < 6 && !callback; step++) {
    if (await page.locator('#signin').count()) {
      if (signedIn) throw new Error('sign-in failed: ' + (await page.locator('#error').textContent()));
      await signIn(page, username, password, done);
      signedIn = true;
    } else if (await page.locator('#approve').count()) {
      consent = {
        client: (await page.locator('#client-name').textContent()).trim(),
        unverified: (await page.locator('#unverified').count()) > 0,
        resources: await page.locator('.resource-name').allTextContents(),
        resourceUris: await page.locator('.resource-uri').allTextContents(),
        scopes: await page.locator('.scope').evaluateAll((els) => els.map((e) => e.dataset.scope)),
        redirectHost: (await page.locator('#redirect-host').textContent()).trim(),
        title: await page.title(),
      };
      if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
      await submit(page, decision === 'deny' ? '#deny' : '#approve', done);
    } else if (await page.locator('#error').count()) {
      throw new Error('error page: ' + (await page.locator('#error').textContent()));
    } else {
      await page.waitForTimeout(100);
    }
  }
  if (!callback) throw new Error('never sent back to the client; last page ' + page.url());
  return { callback, consent, signedIn };
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
