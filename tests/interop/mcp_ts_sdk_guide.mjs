// The official MCP TypeScript SDK client (`Client` + `StreamableHTTPClientTransport` with an
// `OAuthClientProvider`) against the servers of docs/guides/ (ts_mcp_server.mjs): a bare 401,
// discovery (RFC 9728, then RFC 8414), registration (RFC 7591), the code flow with PKCE and
// `resource`, the tools, and the 403 insufficient_scope step-up for add_note. The user's part
// is plain HTTP (http_user.mjs): no browser needed.
//
//   node mcp_ts_sdk_guide.mjs <mcp-url> <username> <password>
//
// Prints one JSON line: every HTTP exchange the SDK made (no tokens), the authorization
// requests, the tool results and how the step-up went.
import { randomBytes } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError, auth, extractWWWAuthenticateParams } from '@modelcontextprotocol/sdk/client/auth.js';
import { HttpUser } from './http_user.mjs';

const [mcpUrl, username, password] = process.argv.slice(2);
// A loopback redirect URI (RFC 8252 §7.3); the user agent stops at the redirect to it.
const REDIRECT_URI = 'http://127.0.0.1:7/callback';

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

const user = new HttpUser(username, password);

// An in-memory OAuthClientProvider whose redirectToAuthorization has the user sign in and
// approve over HTTP, and keeps the code for finishAuth.
class Provider {
  constructor() {
    this.authorizations = [];
    this.pendingCode = null;
  }
  get redirectUrl() { return REDIRECT_URI; }
  get clientMetadata() {
    return {
      client_name: 'MCP TypeScript SDK guide interop',
      redirect_uris: [REDIRECT_URI],
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
    const seen = await user.authorize(url.href, REDIRECT_URI);
    const back = new URL(seen.callback);
    if (back.searchParams.get('state') !== this._state) throw new Error('state mismatch on the redirect');
    this.authorizations.push({
      scope: url.searchParams.get('scope'),
      resource: url.searchParams.get('resource'),
      codeChallengeMethod: url.searchParams.get('code_challenge_method'),
      consent: seen.consent,
      signedIn: seen.signedIn,
      iss: back.searchParams.get('iss'),
      error: back.searchParams.get('error'),
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

const text = (result) => result.content.filter((c) => c.type === 'text').map((c) => c.text).join('\n');
const json = (result) => JSON.parse(text(result));
const provider = new Provider();
const newTransport = () => new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider, fetch: recordingFetch });
const newClient = () => new Client({ name: 'concierge-guide-interop', version: '1.0.0' });

const out = {};
try {
  // 1. The bare request meets the 401; the SDK discovers, registers and sends the user to the
  // authorization endpoint, then stops with UnauthorizedError until the code is handed back.
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
  out.clientId = provider.clientInformation()?.client_id;
  out.tools = (await client.listTools()).tools.map((t) => t.name).sort();
  out.whoami = json(await client.callTool({ name: 'whoami', arguments: {} }));
  out.listBefore = json(await client.callTool({ name: 'list_notes', arguments: {} }));

  // 2. add_note needs notes:write: 403 insufficient_scope. The SDK's own step-up calls auth()
  // with the challenged scope; holding a refresh token, auth() refreshes, which cannot widen
  // the grant, and the SDK gives up ("403 after trying upscoping"). Then the application
  // re-authorizes: drop the tokens, auth() with the challenge's scope, the user consents.
  const note = { name: 'add_note', arguments: { text: 'written by the TypeScript SDK' } };
  try {
    out.addNote = json(await client.callTool(note));
    out.stepUp = 'not asked';
  } catch (e) {
    out.sdkStepUpError = `${e.constructor.name}: ${e.message}`;
    if (e instanceof UnauthorizedError) {
      out.stepUp = 'sdk';
    } else if (e instanceof StreamableHTTPError && e.code === 403) {
      const { scope, resourceMetadataUrl, error } = extractWWWAuthenticateParams(lastForbidden);
      out.challenge = { error, scope, resourceMetadataUrl: resourceMetadataUrl?.href };
      provider.invalidateCredentials('tokens');
      const result = await auth(provider, { serverUrl: mcpUrl, scope, resourceMetadataUrl, fetchFn: recordingFetch });
      if (result !== 'REDIRECT') throw new Error(`auth() answered ${result}`);
      out.stepUp = 'auth()';
    } else {
      throw e;
    }
    await transport.finishAuth(provider.takeCode());
    out.addNote = json(await client.callTool(note));
  }
  out.listAfter = json(await client.callTool({ name: 'list_notes', arguments: {} }));
  out.grantedScope = provider.tokens()?.scope;
  await client.close();
} catch (e) {
  console.error(JSON.stringify({ ...out, authorizations: provider.authorizations, trail }));
  throw e;
}
out.authorizations = provider.authorizations;
out.trail = trail;
console.log(JSON.stringify(out));
