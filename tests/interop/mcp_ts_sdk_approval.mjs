// The official MCP TypeScript SDK client calling a tool that needs the user's approval of
// that very call (`delete_note` of mcp-notes: concierge-guard asks Concierge by CIBA with an
// `mcp_tool_call` authorization detail), with the user in headless Chromium: authorization
// and consent first, then the approvals page, approving one deletion and denying another.
//
//   node mcp_ts_sdk_approval.mjs <mcp-url> <issuer> <username> <password> <profile-dir>
//
// Prints one JSON line: each tool answer and what the approvals page showed.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { launch, loopbackReceiver, BrowserProvider } from './lib.mjs';

const [mcpUrl, issuer, username, password, profile] = process.argv.slice(2);
const receiver = await loopbackReceiver();
const ctx = await launch(profile);
const provider = new BrowserProvider({ ctx, receiver, username, password, clientName: 'MCP TypeScript SDK approvals' });
// Ask for both scopes at once: delete_note needs notes:write.
provider.extra = { scope: 'notes:read notes:write' };
const newTransport = () => new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider });
const newClient = () => new Client({ name: 'concierge-approvals', version: '1.0.0' });

// On the approvals page (the browser is signed in from the consent), decide on the request
// that names `tool`, and say what the page showed.
async function decide(decision) {
  const page = await ctx.newPage();
  await page.goto(`${issuer}/account/approvals`, { waitUntil: 'load' });
  const request = page.locator('.approval').first();
  const seen = {
    heading: (await request.locator('h2').textContent()).trim(),
    detail: (await request.locator('.detail').textContent()).trim(),
    argument: (await request.locator('.arguments code').first().textContent()).trim(),
  };
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), request.locator(`.${decision}`).click()]);
  seen.done = (await page.locator('#done').textContent()).trim();
  await page.close();
  return seen;
}

const out = {};
try {
  try {
    await newClient().connect(newTransport());
    throw new Error('connected without authorization');
  } catch (e) {
    if (!(e instanceof UnauthorizedError)) throw e;
  }
  const transport = newTransport();
  await transport.finishAuth(provider.takeCode());
  const client = newClient();
  await client.connect(transport);
  const call = async (name, args) => (await client.callTool({ name, arguments: args })).structuredContent;

  out.added = await call('add_note', { text: 'groceries' });
  out.kept = await call('add_note', { text: 'birthdays' });
  out.firstTry = await call('delete_note', { id: 1 });
  out.approvedPage = await decide('approve');
  out.secondTry = await call('delete_note', { id: 1 });
  out.otherTry = await call('delete_note', { id: 2 });
  out.deniedPage = await decide('deny');
  out.otherAgain = await call('delete_note', { id: 2 });
  out.listAfter = await call('list_notes', {});
  await client.close();
} catch (e) {
  console.error(JSON.stringify(out));
  throw e;
} finally {
  await ctx.close();
  receiver.close();
}
console.log(JSON.stringify(out));
