// Passkeys in headless Chromium with a virtual authenticator (DevTools protocol, `WebAuthn`
// domain): every ceremony of the pages in one browser run, for tests/api/passkeys.rs.
//
//   node passkeys.mjs <json: {issuer, username, password, authorizeUrl, redirectPrefix, profile}>
//
// Prints one JSON line with what each step saw; the Rust test asserts on it.
import http from 'node:http';
import { launch } from './lib.mjs';

const cfg = JSON.parse(process.argv[2]);
const result = {};
const ctx = await launch(cfg.profile);

// A page of another origin (still `localhost`, the RP ID): a ceremony made there carries
// that origin in its clientDataJSON.
const other = http.createServer((_, res) => {
  res.writeHead(200, { 'content-type': 'text/html' });
  res.end('<!doctype html><title>Another site</title><p>another site');
});
await new Promise((resolve) => other.listen(0, '127.0.0.1', resolve));
const otherOrigin = `http://localhost:${other.address().port}`;

// In the page: run navigator.credentials.get with options as the server sent them, and
// return the answer as JSON (the same encoding as /static/passkey.js).
const getInPage = async (options) => {
  const fromB64u = (s) => {
    const b = atob(s.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((s.length + 3) % 4));
    return Uint8Array.from(b, (c) => c.charCodeAt(0)).buffer;
  };
  const toB64u = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)))
    .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  const pk = { ...options.publicKey, challenge: fromB64u(options.publicKey.challenge) };
  pk.allowCredentials = (pk.allowCredentials || []).map((c) => ({ ...c, id: fromB64u(c.id) }));
  const cred = await navigator.credentials.get({ publicKey: pk });
  return {
    id: cred.id, rawId: toB64u(cred.rawId), type: cred.type,
    response: {
      authenticatorData: toB64u(cred.response.authenticatorData),
      clientDataJSON: toB64u(cred.response.clientDataJSON),
      signature: toB64u(cred.response.signature),
      userHandle: cred.response.userHandle ? toB64u(cred.response.userHandle) : null,
    },
    extensions: {},
  };
};

// In the page: POST JSON to the server with the page's anti-forgery token.
const postInPage = async ([path, body]) => {
  const el = document.querySelector('[data-csrf]');
  const res = await fetch(el.dataset.base + path, {
    method: 'POST', credentials: 'same-origin',
    headers: { 'content-type': 'application/json', 'x-csrf-token': el.dataset.csrf },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json().catch(() => null) };
};

// Open `url`, waiting out a navigation still under way: after an approval the browser goes on to
// the client's redirect URI, where nothing listens, and that error page may land after we
// moved on.
async function gotoSettled(page, url) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await page.goto(url);
    } catch (e) {
      if (attempt >= 3 || !String(e).includes('interrupted by another navigation')) throw e;
      await page.waitForLoadState('load').catch(() => {});
    }
  }
}

async function clickAndWait(page, selector, urlPart) {
  // The next page load (a form post, or the script's location.assign after its fetches).
  await Promise.all([page.waitForNavigation({ waitUntil: 'load', timeout: 15000 }), page.click(selector)]);
  if (!page.url().includes(urlPart)) throw new Error(`expected ${urlPart}, at ${page.url()}`);
}

async function errorShown(page) {
  await page.locator('#passkey-error').waitFor({ state: 'visible', timeout: 15000 });
  return (await page.locator('#passkey-error').textContent()).trim();
}

const names = (page) => page.locator('.passkey-name').allTextContents();

try {
  const page = await ctx.newPage();
  // The autofill (conditional mediation) stays out of these steps: each one uses the button
  // or its own request, so no pending autofill request races them.
  await page.addInitScript(() => {
    if (window.PublicKeyCredential) {
      Object.defineProperty(PublicKeyCredential, 'isConditionalMediationAvailable', { value: undefined });
    }
  });
  const cdp = await ctx.newCDPSession(page);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true,
      isUserVerified: true, automaticPresenceSimulation: true,
    },
  });
  const security = `${cfg.issuer}/account/security`;

  // 1. Sign in with the password, register a passkey on the security page, rename it.
  await gotoSettled(page, security);
  result.signinPage = {
    autocomplete: await page.locator('#username').getAttribute('autocomplete'),
    button: await page.locator('#passkey-signin-button').isVisible(),
  };
  await page.fill('#username', cfg.username);
  await page.fill('#password', cfg.password);
  await clickAndWait(page, '#signin', '/account/security');
  await page.fill('#passkey-name', 'My laptop');
  await clickAndWait(page, '#passkey-add', '/account/security');
  await page.waitForLoadState('load');
  result.registered = await names(page);
  const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
  result.authenticator = credentials.map((c) => ({ resident: c.isResidentCredential, rpId: c.rpId }));
  await page.fill('#rename-1', '  Work <b>laptop</b>  ');
  await clickAndWait(page, 'form[action$="/passkeys/rename"] button', '/account/security');
  result.renamed = await names(page);
  result.renamedMarkup = await page.locator('.passkey-name b').count();

  // 2. Signed out: a passwordless sign-in on the way to an authorization, with the button.
  await ctx.clearCookies();
  let callback = null;
  page.on('request', (r) => { if (r.url().startsWith(cfg.redirectPrefix)) callback = r.url(); });
  await gotoSettled(page, cfg.authorizeUrl);
  await page.locator('#passkey-signin-button').waitFor({ state: 'visible' });
  await clickAndWait(page, '#passkey-signin-button', '/authorize');
  await page.locator('#approve').waitFor({ state: 'visible' });
  await page.click('#approve').catch(() => {});
  for (let i = 0; i < 50 && !callback; i++) await page.waitForTimeout(100);
  result.passwordless = { callback };

  // 3. Signed out: the password, then the passkey as the second step.
  await ctx.clearCookies();
  await gotoSettled(page, security);
  await page.fill('#username', cfg.username);
  await page.fill('#password', cfg.password);
  await page.click('#signin');
  await page.locator('#passkey-second-button').waitFor({ state: 'visible' });
  result.secondStep = { codeForm: await page.locator('#code').count() };
  await clickAndWait(page, '#passkey-second-button', '/account/security');
  result.secondStep.names = await names(page);

  // 4. A replayed answer: the same assertion posted twice.
  await ctx.clearCookies();
  await gotoSettled(page, `${cfg.issuer}/signin`);
  await page.locator('#passkey-signin').waitFor({ state: 'attached' });
  const opts = await page.evaluate(postInPage, ['/signin/passkey/options', {}]);
  const answer = await page.evaluate(getInPage, opts.body);
  const first = await page.evaluate(postInPage, ['/signin/passkey', { ceremony: opts.body.ceremony, credential: answer }]);
  const again = await page.evaluate(postInPage, ['/signin/passkey', { ceremony: opts.body.ceremony, credential: answer }]);
  // The same answer for a new ceremony: its challenge is not this one.
  const fresh = await page.evaluate(postInPage, ['/signin/passkey/options', {}]);
  const swapped = await page.evaluate(postInPage, ['/signin/passkey', { ceremony: fresh.body.ceremony, credential: answer }]);
  result.replay = { first: first.status, again: again.status, againError: again.body?.error, swapped: swapped.status };

  // 5. A ceremony made on another origin: options from our server, the assertion made on
  // the other page, posted back to ours.
  await ctx.clearCookies();
  await gotoSettled(page, `${cfg.issuer}/signin`);
  await page.locator('#passkey-signin').waitFor({ state: 'attached' });
  const ours = await page.evaluate(postInPage, ['/signin/passkey/options', {}]);
  await gotoSettled(page, otherOrigin);
  const elsewhere = await page.evaluate(getInPage, ours.body);
  await gotoSettled(page, `${cfg.issuer}/signin`);
  await page.locator('#passkey-signin').waitFor({ state: 'attached' });
  // The browser cookie is the same, so this page's token still fits the ceremony.
  const posted = await page.evaluate(postInPage, ['/signin/passkey', { ceremony: ours.body.ceremony, credential: elsewhere }]);
  result.otherOrigin = { status: posted.status, error: posted.body?.error };

  // 6. No user verification: the authenticator cannot verify the user, and the options are
  // changed on the way so that the browser does not insist (as a hostile page could): the
  // server must refuse the assertion it gets.
  await cdp.send('WebAuthn.setUserVerified', { authenticatorId, isUserVerified: false });
  await page.route('**/signin/passkey/options', async (route) => {
    const response = await route.fetch();
    const json = await response.json();
    json.publicKey.userVerification = 'discouraged';
    await route.fulfill({ response, json });
  });
  await ctx.clearCookies();
  await gotoSettled(page, `${cfg.issuer}/signin`);
  await page.locator('#passkey-signin-button').waitFor({ state: 'visible' });
  await page.click('#passkey-signin-button');
  result.noUserVerification = { error: await errorShown(page), url: page.url() };
  await page.unroute('**/signin/passkey/options');
  await cdp.send('WebAuthn.setUserVerified', { authenticatorId, isUserVerified: true });

  // 7. Signed in again (recently), remove the passkey.
  await ctx.clearCookies();
  await gotoSettled(page, security);
  await page.fill('#username', cfg.username);
  await page.fill('#password', cfg.password);
  await page.click('#signin');
  await clickAndWait(page, '#passkey-second-button', '/account/security');
  await clickAndWait(page, 'form[action$="/passkeys/remove"] button', '/account/security');
  result.removed = await names(page);
  result.csp = await page.evaluate(() => document.querySelectorAll('script:not([src])').length);
} finally {
  other.close();
  await ctx.close();
}
console.log(JSON.stringify(result));
