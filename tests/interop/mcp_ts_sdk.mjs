// The official MCP TypeScript SDK client (`Client` + `StreamableHTTPClientTransport` with an
// `OAuthClientProvider`) doing an agent's whole journey against an MCP server protected by
// concierge-guard, with the user's part in headless Chromium.
//
//   node mcp_ts_sdk.mjs <mcp-url> <username> <password> <profile-dir> <token-for-another-resource>
//
// Prints one JSON line: every HTTP exchange the SDK made, the authorization requests it sent to
// the browser, the consent pages seen, the tool results, the step-up and the refusal.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError, auth, extractWWWAuthenticateParams } from '@modelcontextprotocol/sdk/client/auth.js';
import { launch, loopbackReceiver, BrowserProvider } from './lib.mjs';

const [mcpUrl, username, password, profile, foreignToken] = process.argv.slice(2);

// What the SDK sent and got back, in order (no tokens: only method, URL, status, challenge).
const trail = [];
let lastForbidden = null;
const recordingFetch = async (url, init) => {
  const res = await fetch(url, init);
  if (res.status === 403) lastForbidden = res;
  trail.push({
    method: init?.method || 'GET',
    url: String(url),
    status: res.status,
    wwwAuthenticate: res.headers.get('www-authenticate'),
  });
  return res;
};

// The redirect URI is a real loopback listener (RFC 8252 §7.3), as a desktop agent has.
const receiver = await loopbackReceiver();
const ctx = await launch(profile);

const text = (result) => result.content.filter((c) => c.type === 'text').map((c) => c.text).join('\n');
const browserUser = { ctx, receiver, username, password, clientName: 'MCP TypeScript SDK interop' };
const provider = new BrowserProvider(browserUser);
const newTransport = (authProvider) =>
  new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider, fetch: recordingFetch });
const newClient = () => new Client({ name: 'concierge-interop', version: '1.0.0' });

const out = {};
try {
  // 1. A bare request meets the 401; the SDK discovers, registers, sends the browser to the
  // authorization endpoint and stops with UnauthorizedError until the code is handed back.
  try {
    await newClient().connect(newTransport(provider));
    throw new Error('connected without authorization');
  } catch (e) {
    if (!(e instanceof UnauthorizedError)) throw e;
  }
  const transport = newTransport(provider);
  await transport.finishAuth(provider.takeCode());
  const client = newClient();
  await client.connect(transport);
  out.clientId = provider.clientInformation()?.client_id;
  out.tools = (await client.listTools()).tools.map((t) => t.name).sort();
  out.whoami = text(await client.callTool({ name: 'whoami', arguments: {} }));
  out.listBefore = text(await client.callTool({ name: 'list_notes', arguments: {} }));

  // 2. add_note needs notes:write: the guard answers 403 insufficient_scope with
  // scope="notes:read notes:write". The SDK's own step-up (StreamableHTTPClientTransport.send on
  // 403 insufficient_scope) takes that scope and calls auth(); but while it holds a refresh
  // token, auth() refreshes instead of authorizing, a refresh cannot widen the scope (RFC 6749
  // §6), and the SDK (1.32.2) gives up with "403 after trying upscoping". The application then
  // does what the SDK documents for re-authorization: drop the tokens and call auth() with the
  // scope from the challenge, which sends the user to consent to the wider scope.
  const note = { name: 'add_note', arguments: { text: 'written by the TypeScript SDK' } };
  try {
    out.addNote = text(await client.callTool(note));
    out.stepUp = 'not asked';
  } catch (e) {
    out.sdkStepUpError = `${e.constructor.name}: ${e.message}`;
    if (e instanceof UnauthorizedError) {
      out.stepUp = 'sdk';
    } else if (e instanceof StreamableHTTPError && e.code === 403) {
      const { scope, resourceMetadataUrl, error } = extractWWWAuthenticateParams(lastForbidden);
      out.challenge = { error, scope };
      provider.invalidateCredentials('tokens');
      const result = await auth(provider, { serverUrl: mcpUrl, scope, resourceMetadataUrl, fetchFn: recordingFetch });
      if (result !== 'REDIRECT') throw new Error(`auth() answered ${result}`);
      out.stepUp = 'auth()';
    } else {
      throw e;
    }
    await transport.finishAuth(provider.takeCode());
    out.addNote = text(await client.callTool(note));
  }
  out.listAfter = text(await client.callTool({ name: 'list_notes', arguments: {} }));
  await client.close();

  // 3. A token for another resource: the guard refuses it (401 invalid_token), and the SDK
  // would have to authorize afresh.
  const before = trail.length;
  const refusing = new BrowserProvider(browserUser);
  refusing.saveClientInformation(provider.clientInformation());
  refusing.saveTokens({ access_token: foreignToken, token_type: 'Bearer' });
  refusing.redirectToAuthorization = async () => { out.foreignWouldReauthorize = true; };
  try {
    await newClient().connect(newTransport(refusing));
    out.foreignConnected = true;
  } catch (e) {
    out.foreignError = e.constructor.name;
  }
  out.foreign = trail.slice(before).find((t) => t.url === mcpUrl);
  out.authorizations = provider.authorizations;
  out.trail = trail;
} catch (e) {
  // What happened so far helps more than the stack alone.
  console.error(JSON.stringify({ ...out, authorizations: provider.authorizations, trail }));
  throw e;
} finally {
  await ctx.close();
  receiver.close();
}
console.log(JSON.stringify(out));
