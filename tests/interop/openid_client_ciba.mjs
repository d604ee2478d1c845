// openid-client (not ours) drives CIBA in poll mode against Concierge, while Chromium plays
// the user on the account area's approvals page: one request approved (with an MCP tool
// call's authorization_details and a binding message), one denied.
//
//   node openid_client_ciba.mjs <issuer> <client_id> <secret> <resource> <username> <password> <profile-dir>
import * as client from 'openid-client';
import { launch } from './lib.mjs';

const [issuer, id, secret, resource, username, password, profile] = process.argv.slice(2);
const insecure = { execute: [client.allowInsecureRequests] }; // the test issuer is http on loopback
const explain = (step) => (e) => {
  console.error(step, e.name, e.message, e.error, e.error_description);
  process.exit(1);
};
const config = await client.discovery(new URL(issuer), id, undefined, client.ClientSecretBasic(secret), insecure);
const details = [{ type: 'mcp_tool_call', tool: 'delete_note', summary: 'Delete the note “groceries”', arguments: { id: 'n-42' } }];
const approveMe = await client.initiateBackchannelAuthentication(config, {
  scope: 'openid notes:write',
  login_hint: username,
  binding_message: 'Code 7H2K',
  resource,
  authorization_details: JSON.stringify(details),
}).catch(explain('backchannel authentication'));
const denyMe = await client.initiateBackchannelAuthentication(config, {
  scope: 'openid notes:read',
  login_hint: username,
  binding_message: 'Code Q9ZX',
  resource,
}).catch(explain('backchannel authentication'));

// The client polls while the user decides.
const approvedPoll = client.pollBackchannelAuthenticationGrant(config, approveMe);
const deniedPoll = client.pollBackchannelAuthenticationGrant(config, denyMe).then(
  () => 'issued',
  (e) => e.error || e.message,
);

const text = async (locator) => ((await locator.count()) ? (await locator.first().textContent()).trim() : null);
const ctx = await launch(profile);
let seen;
try {
  const page = await ctx.newPage();
  await page.goto(`${issuer}/account/approvals`, { waitUntil: 'load' });
  if (await page.locator('#signin').count()) {
    await page.fill('#username', username);
    await page.fill('#password', password);
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('#signin')]);
  }
  const first = page.locator('.approval', { hasText: 'Code 7H2K' });
  seen = {
    pending: await page.locator('.approval').count(),
    heading: await text(first.locator('h2')),
    binding: await text(first.locator('.binding-message')),
    detail: await text(first.locator('.detail')),
    argument: await text(first.locator('.arguments code')),
    refreshes: await page.locator('meta[http-equiv="refresh"]').count(),
  };
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), first.locator('.approve').click()]);
  seen.afterApprove = await text(page.locator('#done'));
  const second = page.locator('.approval', { hasText: 'Code Q9ZX' });
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), second.locator('.deny').click()]);
  seen.afterDeny = await text(page.locator('#done'));
  seen.left = await page.locator('.approval').count();
} finally {
  await ctx.close();
}
const tokens = await approvedPoll.catch(explain('polling'));
const payload = JSON.parse(Buffer.from(tokens.access_token.split('.')[1], 'base64url').toString());
console.log(JSON.stringify({
  ...seen,
  sub: tokens.claims()?.sub,
  aud: payload.aud,
  scope: tokens.scope,
  details: payload.authorization_details,
  hasRefresh: Boolean(tokens.refresh_token),
  denied: await deniedPoll,
}));
