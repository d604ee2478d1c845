// "Sign in with …" in headless Chromium, for tests/api/upstream.rs: from the relying party's
// sign-in page, its provider button, the provider's own sign-in and consent pages (another
// Concierge), and back, signed in, on the account security page.
//
//   node upstream_browser.mjs <json: {signin, provider, username, password, backPrefix, profile}>
//
// Prints one JSON line with what each step saw; the Rust test asserts on it.
import { launch } from './lib.mjs';

const cfg = JSON.parse(process.argv[2]);
const ctx = await launch(cfg.profile);
const page = await ctx.newPage();
const result = { pages: [] };
const click = (selector) => Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click(selector)]);

await page.goto(cfg.signin, { waitUntil: 'load' });
result.buttons = (await page.locator('a.provider').allTextContents()).map((t) => t.trim());
await click(`a.provider[data-provider="${cfg.provider}"]`);
for (let step = 0; step < 8 && !page.url().startsWith(cfg.backPrefix); step++) {
  result.pages.push(new URL(page.url()).pathname);
  if (await page.locator('#signin').count()) {
    result.askerAtProvider = (await page.locator('#client-name').count())
      ? (await page.locator('#client-name').textContent()).trim() : null;
    await page.fill('#username', cfg.username);
    await page.fill('#password', cfg.password);
    await click('#signin');
  } else if (await page.locator('#approve').count()) {
    await click('#approve');
  } else {
    throw new Error('unexpected page ' + page.url() + ': ' + (await page.content()).slice(0, 500));
  }
}
result.url = page.url();
result.signedInAs = (await page.locator('p:has-text("Signed in as") strong').first().textContent()).trim();
result.identities = await page.locator('#identities .issuer').allTextContents();
await ctx.close();
console.log(JSON.stringify(result));
