// The official MCP TypeScript SDK client meeting a tool that needs a fresh second factor
// (RFC 9470 step-up, `clear_notes` of mcp-notes behind concierge-guard), with the user's part
// in headless Chromium: the SDK's own authorization first, then the challenges it cannot
// answer alone — `403 insufficient_scope` and `401 insufficient_user_authentication` — turned
// into authorization requests the way the SDK documents for re-authorization, the second with
// the challenge's `acr_values` and `max_age` (RFC 9470 §4). The user has no second factor yet:
// Concierge has them set one up at that sign-in.
//
//   node mcp_ts_sdk_step_up.mjs <mcp-url> <username> <password> <profile-dir>
//
// Prints one JSON line: the challenges met, the authorization requests sent, and the results.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError, auth } from '@modelcontextprotocol/sdk/client/auth.js';
import { launch, loopbackReceiver, authenticator, BrowserProvider } from './lib.mjs';

const [mcpUrl, username, password, profile] = process.argv.slice(2);

// The last refusal's challenge (no tokens are recorded).
let lastChallenge = null;
const recordingFetch = async (url, init) => {
  const res = await fetch(url, init);
  if (res.status === 401 || res.status === 403) lastChallenge = res.headers.get('www-authenticate');
  return res;
};
const param = (header, name) => header?.match(new RegExp(`${name}="([^"]*)"`))?.[1];

const receiver = await loopbackReceiver();
const ctx = await launch(profile);
const mfa = authenticator();

const claims = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
const provider = new BrowserProvider({ ctx, receiver, username, password, mfa, clientName: 'MCP TypeScript SDK step-up' });
const newTransport = () => new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider, fetch: recordingFetch });
const newClient = () => new Client({ name: 'concierge-step-up', version: '1.0.0' });

const out = { challenges: [] };
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
  out.firstAcr = claims(provider.tokens().access_token).acr;

  // Call a tool; a challenge the SDK gave up on becomes a new authorization request (the
  // SDK's own attempt refreshes, which can neither widen the scope nor re-authenticate).
  const call = async (name, args) => {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        return (await client.callTool({ name, arguments: args })).structuredContent;
      } catch (e) {
        if (!(e instanceof StreamableHTTPError) || ![401, 403].includes(e.code)) throw e;
        const challenge = {
          status: e.code,
          error: param(lastChallenge, 'error'),
          scope: param(lastChallenge, 'scope'),
          acrValues: param(lastChallenge, 'acr_values'),
          maxAge: param(lastChallenge, 'max_age'),
        };
        out.challenges.push(challenge);
        if (challenge.error === 'insufficient_user_authentication') {
          provider.extra = { acr_values: challenge.acrValues ?? '', max_age: challenge.maxAge ?? '' };
        } else if (challenge.error !== 'insufficient_scope') {
          throw e;
        }
        provider.invalidateCredentials('tokens');
        const scope = challenge.scope ?? 'notes:read notes:write';
        const result = await auth(provider, {
          serverUrl: mcpUrl,
          scope,
          resourceMetadataUrl: new URL(param(lastChallenge, 'resource_metadata')),
          fetchFn: recordingFetch,
        });
        if (result !== 'REDIRECT') throw new Error(`auth() answered ${result}`);
        await transport.finishAuth(provider.takeCode());
      }
    }
    throw new Error(`${name} still refused after stepping up`);
  };
  out.added = await call('add_note', { text: 'to be cleared' });
  out.cleared = await call('clear_notes', {});
  out.finalAcr = claims(provider.tokens().access_token).acr;
  out.finalAmr = claims(provider.tokens().access_token).amr;
  out.enrolledAtSignIn = mfa.enrolledAtSignIn === true;
  out.recoveryCodes = mfa.recoveryCodes?.length ?? 0;
  out.listAfter = await call('list_notes', {});
  out.authorizations = provider.authorizations;
  await client.close();
} catch (e) {
  console.error(JSON.stringify({ ...out, authorizations: provider.authorizations }));
  throw e;
} finally {
  await ctx.close();
  receiver.close();
}
console.log(JSON.stringify(out));
