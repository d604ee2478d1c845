// The MCP TypeScript SDK's own client-credentials providers (the MCP client-credentials
// extension, SEP-1046) connecting its `Client` over Streamable HTTP to an MCP server protected
// by concierge-guard: `ClientCredentialsProvider` (client_secret_basic) and
// `PrivateKeyJwtProvider` (private_key_jwt, ES256). No browser, no registration: operator
// clients.
//
//   node mcp_ts_sdk_machine.mjs <mcp-url> <issuer> <basic-client-id> <basic-secret> <jwt-client-id>
//
// The private_key_jwt client's key comes as a PKCS#8 PEM in the environment (PRIVATE_KEY_PEM).
// Prints one JSON line: per provider, the token requests it made, the tools, `list_notes`,
// `whoami`, and the access token's claims.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ClientCredentialsProvider, PrivateKeyJwtProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';

const [mcpUrl, issuer, basicId, basicSecret, jwtId] = process.argv.slice(2);

const claims = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());

// Connect with `provider`, use the tools; what the SDK sent to the token endpoint (how it
// authenticated, never the secrets) and what came back.
async function journey(provider) {
  const tokenRequests = [];
  const recordingFetch = async (url, init) => {
    const res = await fetch(url, init);
    if (String(url) === `${issuer}/token`) {
      const body = new URLSearchParams(String(init.body));
      const headers = new Headers(init.headers);
      tokenRequests.push({
        status: res.status,
        grantType: body.get('grant_type'),
        scope: body.get('scope'),
        resource: body.get('resource'),
        basic: (headers.get('authorization') || '').startsWith('Basic '),
        secretInBody: body.has('client_secret'),
        assertion: body.has('client_assertion') ? claims(body.get('client_assertion')) : null,
        assertionType: body.get('client_assertion_type'),
      });
    }
    return res;
  };
  const client = new Client({ name: 'mcp-ts-sdk-machine', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider, fetch: recordingFetch });
  await client.connect(transport);
  const tools = (await client.listTools()).tools.map((t) => t.name);
  const call = async (name) => (await client.callTool({ name, arguments: {} })).structuredContent;
  const listNotes = await call('list_notes');
  const whoami = await call('whoami');
  await client.close();
  return { tokenRequests, tools, listNotes, whoami, token: claims(provider.tokens().access_token) };
}

const basic = await journey(new ClientCredentialsProvider({
  clientId: basicId,
  clientSecret: basicSecret,
  clientName: 'MCP TypeScript SDK client credentials',
  scope: 'notes:read',
  expectedIssuer: issuer,
}));
const privateKeyJwt = await journey(new PrivateKeyJwtProvider({
  clientId: jwtId,
  privateKey: process.env.PRIVATE_KEY_PEM,
  algorithm: 'ES256',
  clientName: 'MCP TypeScript SDK private_key_jwt',
  scope: 'notes:read',
  expectedIssuer: issuer,
}));
console.log(JSON.stringify({ basic, privateKeyJwt }));
