// The MCP TypeScript SDK v2 (2.4.0) as a machine client with DPoP, against the FastMCP server of
// `fastmcp_server.py`, whose resource in Concierge signs RS256 and has DPoP off.
//
// In 2.4.0 a provider opts into DPoP by implementing `dpop()` (SEP-1932): `auth()` then signs
// a DPoP proof into every token request, and the transport presents the token with the DPoP
// scheme only when the AS answered `token_type: DPoP` (RFC 9449 §7.1), otherwise as Bearer.
// Its `ClientCredentialsProvider` does not implement `dpop()`, so this extends it with the
// documented one-liner: the SDK's own client-credentials flow with DPoP on.
//
//   node fastmcp_ts_sdk_v2_dpop.mjs <mcp-url> <issuer> <client-id>
//
// The secret comes in CLIENT_SECRET. Prints one JSON line: the token requests (whether they
// carried a DPoP proof, the token_type answered, never a token), how each MCP request presented
// its token, the tools and `whoami`.
import { Client, ClientCredentialsProvider, DpopSession, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';

const [mcpUrl, issuer, clientId] = process.argv.slice(2);

class DpopClientCredentialsProvider extends ClientCredentialsProvider {
  #dpop = DpopSession.create();
  dpop() {
    return this.#dpop;
  }
}

const tokenRequests = [];
const mcpRequests = [];
const recordingFetch = async (url, init = {}) => {
  const res = await fetch(url, init);
  const u = String(url);
  const headers = new Headers(init.headers);
  if (u === `${issuer}/token`) {
    const body = new URLSearchParams(String(init.body));
    const json = await res.clone().json().catch(() => ({}));
    const proof = headers.get('dpop');
    tokenRequests.push({
      status: res.status,
      grantType: body.get('grant_type'),
      resource: body.get('resource'),
      scope: body.get('scope'),
      dpopProof: proof ? JSON.parse(Buffer.from(proof.split('.')[0], 'base64url').toString()).typ : null,
      tokenType: json.token_type ?? null,
      error: json.error ?? null,
    });
  } else if (u === mcpUrl) {
    mcpRequests.push({
      status: res.status,
      scheme: (headers.get('authorization') || '').split(' ')[0] || null,
      dpopProof: headers.has('dpop'),
    });
  }
  return res;
};

const provider = new DpopClientCredentialsProvider({
  clientId,
  clientSecret: process.env.CLIENT_SECRET,
  clientName: 'MCP TypeScript SDK v2 with DPoP',
  scope: 'notes:read',
  expectedIssuer: issuer,
});
const client = new Client({ name: 'mcp-ts-sdk-v2-dpop', version: '1.0.0' });
const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider, fetch: recordingFetch });
await client.connect(transport);
const tools = (await client.listTools()).tools.map((t) => t.name).sort();
const result = await client.callTool({ name: 'whoami', arguments: {} });
await client.close();
const whoami = result.structuredContent ?? JSON.parse(result.content[0].text);
const tokens = provider.tokens();
const claims = JSON.parse(Buffer.from(tokens.access_token.split('.')[1], 'base64url').toString());
const header = JSON.parse(Buffer.from(tokens.access_token.split('.')[0], 'base64url').toString());
console.log(JSON.stringify({ tokenRequests, mcpRequests, tools, whoami, isError: result.isError ?? false, savedTokenType: tokens.token_type, token: { alg: header.alg, ...claims } }));
