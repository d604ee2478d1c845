// An MCP server in TypeScript protected by Concierge, written with the MCP TypeScript SDK's own
// pieces: `requireBearerAuth` with a JWT verifier (jose, against Concierge's JWKS),
// `mcpAuthMetadataRouter` for the protected resource metadata (RFC 9728), and a small
// middleware that answers 403 `insufficient_scope` for a tool that needs more scope (step-up).
// This is the server of docs/guides/typescript-mcp-server.md; tests/api/ts_server.rs runs it.
//
//   node ts_mcp_server.mjs <port> <concierge-issuer>
//
// Serves http://127.0.0.1:<port>/mcp (registered in Concierge with `notes:read` and
// `notes:write`) with three tools: whoami, list_notes, add_note (needs notes:write).
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { z } from 'zod';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import { mcpAuthMetadataRouter, getOAuthProtectedResourceMetadataUrl } from '@modelcontextprotocol/sdk/server/auth/router.js';
import { InvalidTokenError } from '@modelcontextprotocol/sdk/server/auth/errors.js';

const [port, ISSUER] = [Number(process.argv[2]), process.argv[3]];

// This server's URL exactly as registered in Concierge (`resource add --uri`): clients send it
// as `resource`, and Concierge puts it in the tokens' `aud`.
const RESOURCE = `http://127.0.0.1:${port}/mcp`;
const REQUIRED_SCOPES = ['notes:read']; // every request
const TOOL_SCOPES = { add_note: ['notes:write'] }; // and these for these tools

// Concierge's metadata (RFC 8414): where its JWKS is, and what the metadata router repeats.
const asMetadata = await (await fetch(`${ISSUER}/.well-known/oauth-authorization-server`)).json();
if (asMetadata.issuer !== ISSUER) throw new Error(`metadata names issuer ${asMetadata.issuer}, not ${ISSUER}`);
const jwks = createRemoteJWKSet(new URL(asMetadata.jwks_uri));

// The SDK's OAuthTokenVerifier: a Concierge access token (RFC 9068) is a JWT signed with a
// key from the JWKS, issued by ISSUER for this server (`aud`), not expired. Anything else is
// InvalidTokenError, which requireBearerAuth answers with 401 invalid_token.
const verifier = {
  async verifyAccessToken(token) {
    let payload;
    try {
      ({ payload } = await jwtVerify(token, jwks, {
        issuer: ISSUER,
        audience: RESOURCE,
        typ: 'at+jwt',
        algorithms: ['ES256', 'RS256'],
        clockTolerance: 30,
      }));
    } catch (e) {
      // The reason goes into the WWW-Authenticate header: a code, never a quote.
      throw new InvalidTokenError(`token refused (${e.code ?? 'ERR_JWT_INVALID'})`);
    }
    // A DPoP-bound token (`cnf.jkt`) is only good with a proof this server does not check.
    // The resource is registered with `--dpop off`, so Concierge never binds its tokens.
    if (payload.cnf) throw new InvalidTokenError('DPoP-bound tokens are not accepted here');
    return {
      token,
      clientId: payload.client_id,
      scopes: typeof payload.scope === 'string' ? payload.scope.split(' ').filter(Boolean) : [],
      expiresAt: payload.exp,
      resource: new URL(RESOURCE),
      extra: { sub: payload.sub, act: payload.act },
    };
  },
};

const resourceMetadataUrl = getOAuthProtectedResourceMetadataUrl(new URL(RESOURCE));
const bearer = requireBearerAuth({ verifier, requiredScopes: REQUIRED_SCOPES, resourceMetadataUrl });

// Step-up (MCP authorization, "Scope Challenge Handling"): a tools/call for a tool whose scopes
// the token lacks is answered 403 insufficient_scope, naming the token's scopes plus the
// missing ones, so the client authorizes again with them. It runs after `bearer`, which put
// the verified token in req.auth.
function requireToolScopes(req, res, next) {
  const messages = Array.isArray(req.body) ? req.body : [req.body];
  const missing = new Set();
  for (const m of messages) {
    if (m?.method !== 'tools/call') continue;
    for (const s of TOOL_SCOPES[m.params?.name] ?? []) if (!req.auth.scopes.includes(s)) missing.add(s);
  }
  if (missing.size === 0) return next();
  const scope = [...new Set([...req.auth.scopes, ...missing])].join(' ');
  const description = `this tool needs ${[...missing].join(' ')}`;
  res.set(
    'WWW-Authenticate',
    `Bearer error="insufficient_scope", scope="${scope}", resource_metadata="${resourceMetadataUrl}", ` +
      `error_description="${description}"`,
  );
  res.status(403).json({ error: 'insufficient_scope', error_description: description });
}

// The tools. The SDK hands each one the verified token as `authInfo`.
const notes = new Map(); // sub → notes
function newServer() {
  const server = new McpServer({ name: 'notes-ts', version: '1.0.0' });
  const text = (value) => ({ content: [{ type: 'text', text: JSON.stringify(value) }] });
  server.registerTool('whoami', { description: 'Who the access token says is calling.' }, ({ authInfo }) =>
    text({ sub: authInfo.extra.sub, client_id: authInfo.clientId, scopes: authInfo.scopes, aud: RESOURCE }),
  );
  server.registerTool('list_notes', { description: 'Your notes (needs notes:read).' }, ({ authInfo }) =>
    text({ notes: notes.get(authInfo.extra.sub) ?? [] }),
  );
  server.registerTool(
    'add_note',
    { description: 'Add a note (needs notes:write).', inputSchema: { text: z.string() } },
    ({ text: note }, { authInfo }) => {
      const mine = notes.get(authInfo.extra.sub) ?? [];
      notes.set(authInfo.extra.sub, [...mine, note]);
      return text({ added: note });
    },
  );
  return server;
}

const app = createMcpExpressApp(); // JSON bodies, Host header checked (127.0.0.1)
// RFC 9728 metadata at /.well-known/oauth-protected-resource/mcp, naming Concierge.
app.use(
  mcpAuthMetadataRouter({
    oauthMetadata: asMetadata,
    resourceServerUrl: new URL(RESOURCE),
    scopesSupported: ['notes:read', 'notes:write'],
    resourceName: 'Notes (TypeScript)',
  }),
);
// Stateless Streamable HTTP: a server and a transport per request.
app.post('/mcp', bearer, requireToolScopes, async (req, res) => {
  const server = newServer();
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
  res.on('close', () => {
    transport.close();
    server.close();
  });
  await server.connect(transport);
  await transport.handleRequest(req, res, req.body);
});
app.all('/mcp', bearer, (req, res) => res.status(405).set('Allow', 'POST').end());

app.listen(port, '127.0.0.1', () => console.log(`listening on ${RESOURCE}`));
