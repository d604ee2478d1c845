// Enterprise-managed authorization (MCP SEP-990, ID-JAG) with the MCP TypeScript SDK v2's own
// `CrossAppAccessProvider`: on the MCP server's 401 the SDK discovers its authorization server
// (RFC 9728), the provider's callback exchanges the user's ID token at the enterprise IdP for
// an ID-JAG with the SDK's `discoverAndRequestJwtAuthGrant` (RFC 8414 discovery, RFC 8693
// token exchange), and the provider redeems it at the authorization server (RFC 7523
// jwt-bearer grant). Then the tools.
//
//   node mcp_ts_sdk_v2_ema.mjs <mcp-url> <idp-issuer> <idp-client-id> <as-issuer> <as-client-id>
//
// The ID token and both client secrets come in the environment (ID_TOKEN, IDP_SECRET,
// AS_SECRET). Prints one JSON line: what the callback was told, the ID-JAG's claims, the
// token requests at both servers (how the client authenticated, never the secrets), the
// tools, `whoami`, `list_notes` and the access token's claims.
import { Client, CrossAppAccessProvider, StreamableHTTPClientTransport, discoverAndRequestJwtAuthGrant } from '@modelcontextprotocol/client';

const [mcpUrl, idpIssuer, idpClient, asIssuer, asClient] = process.argv.slice(2);
const { ID_TOKEN, IDP_SECRET, AS_SECRET } = process.env;

const claims = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());

const tokenRequests = [];
const recordingFetch = async (url, init) => {
  const res = await fetch(url, init);
  const u = String(url);
  if (u === `${idpIssuer}/token` || u === `${asIssuer}/token`) {
    const body = new URLSearchParams(String(init.body));
    tokenRequests.push({
      server: u === `${idpIssuer}/token` ? 'idp' : 'as',
      status: res.status,
      grantType: body.get('grant_type'),
      requestedTokenType: body.get('requested_token_type'),
      audience: body.get('audience'),
      resource: body.get('resource'),
      scope: body.get('scope'),
      basic: (new Headers(init.headers).get('authorization') || '').startsWith('Basic '),
      secretInBody: body.has('client_secret'),
      error: res.ok ? null : await res.clone().text(),
    });
  }
  return res;
};

let told = null;
let jag = null;
const provider = new CrossAppAccessProvider({
  assertion: async (ctx) => {
    told = { authorizationServerUrl: ctx.authorizationServerUrl, resourceUrl: ctx.resourceUrl, scope: ctx.scope ?? null };
    const result = await discoverAndRequestJwtAuthGrant({
      idpUrl: idpIssuer,
      audience: ctx.authorizationServerUrl,
      resource: ctx.resourceUrl,
      idToken: ID_TOKEN,
      clientId: idpClient,
      clientSecret: IDP_SECRET,
      scope: ctx.scope,
      fetchFn: ctx.fetchFn,
    });
    jag = { claims: claims(result.jwtAuthGrant), scope: result.scope ?? null, expiresIn: result.expiresIn ?? null };
    return result.jwtAuthGrant;
  },
  clientId: asClient,
  clientSecret: AS_SECRET,
  clientName: 'MCP TypeScript SDK v2 enterprise-managed',
  expectedIssuer: asIssuer,
  fetchFn: recordingFetch,
});

const client = new Client({ name: 'mcp-ts-sdk-v2-ema', version: '1.0.0' });
const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider, fetch: recordingFetch });
await client.connect(transport);
const tools = (await client.listTools()).tools.map((t) => t.name);
const call = async (name) => (await client.callTool({ name, arguments: {} })).structuredContent;
const whoami = await call('whoami');
const listNotes = await call('list_notes');
await client.close();
console.log(JSON.stringify({ told, jag, tokenRequests, tools, whoami, listNotes, token: claims(provider.tokens().access_token) }));
