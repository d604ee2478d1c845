// Peer for the token paths other than client_credentials: node-oidc-provider 9.13.3 configured as
// ../shared/bench/oidc-provider-peer.mjs (client `bench`, ES256 JWT access tokens for the MCP
// resource, introspection, open registration), plus authorization-code redemption, refresh with
// rotation, revocation and a remembered-consent /auth. The per-request fixtures are seeded in this
// process, in memory (MemoryStore below), before the port opens, and written to OUT_DIR:
//   codes.txt    COUNT codes of `bench` (PKCE S256, redirect http://127.0.0.1/callback, tools:read)
//   refresh.txt  COUNT refresh tokens of the public client `bench-public` (rotated on use)
//   revoke.txt   COUNT refresh tokens of `bench`, to revoke
//   cookie.txt   a Cookie header: `bench-user` signed in, consent to `bench` remembered
//   paths.txt    "name path" lines for the provider's endpoints
// Usage: node peer-paths.mjs PORT OUT_DIR [COUNT]   (COUNT defaults to 60000)
// Run it from a copy of ../shared/bench with `npm install` done, so that the imports resolve.
import { createHash, createHmac } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Provider from 'oidc-provider';
import { generateKeyPair, exportJWK } from 'jose';

const [port, outDir, count] = [Number(process.argv[2]), process.argv[3], Number(process.argv[4] || 60000)];
if (!port || !outDir || !(count > 0)) {
  console.error('usage: node peer-paths.mjs PORT OUT_DIR [COUNT]');
  process.exit(2);
}

const issuer = `http://127.0.0.1:${port}`;
const alg = 'ES256';
const resource = 'http://127.0.0.1:9999/mcp';
const scope = 'tools:read';
const secret = 'bench-secret-0123456789abcdef0123456789abcdef';
const redirectUri = 'http://127.0.0.1/callback';
const verifier = 'bench-verifier-0123456789abcdefghijklmnopqrstuvwxyz';
const challenge = createHash('sha256').update(verifier).digest('base64url');
const accountId = 'bench-user';
// Fixed, so that this script can sign the session cookie itself (koa `cookies` + keygrip).
const cookieKey = 'bench-cookie-key-0123456789abcdef';
const HOUR = 60 * 60;

// In-memory storage, as the provider's default adapter, with two of its limits removed. That one
// is an LRU of 1,000 entries (the fixtures would evict one another), and it re-scans all of a
// grant's tokens on every save (a spread over them, too): /auth with one remembered grant puts
// every code it issues in that grant, so each request costs more than the last (four 5 s runs
// in a row: 741, 482, 394, 382 req/s; this store: 1369, 1049, 1118, 1168) and past ~125,000 live
// codes it throws RangeError. Here a grant's tokens are a Set and expiry is checked on read.
// Nothing expired is swept: a run of minutes keeps what it issued.
const grantable = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PreAuthorizedCode']);
const models = new Map(); // model name -> Map(id -> { payload, expiresAt })
const sessionUids = new Map(); // Session uid -> Session id
const userCodes = new Map(); // device flow user code -> DeviceCode id
const grantMembers = new Map(); // grant id -> Set of [model's Map, token id]
class MemoryStore {
  constructor(model) {
    this.model = model;
    if (!models.has(model)) models.set(model, new Map());
    this.items = models.get(model);
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    this.items.set(id, { payload, expiresAt });
    if (this.model === 'Session') sessionUids.set(payload.uid, id);
    if (payload.userCode) userCodes.set(payload.userCode, id);
    if (payload.grantId && grantable.has(this.model)) {
      if (!grantMembers.has(payload.grantId)) grantMembers.set(payload.grantId, new Set());
      grantMembers.get(payload.grantId).add([this.items, id]);
    }
  }

  async find(id) {
    const entry = this.items.get(id);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      this.items.delete(id);
      return undefined;
    }
    return entry.payload;
  }

  async findByUid(uid) { return this.find(sessionUids.get(uid)); }

  async findByUserCode(userCode) { return this.find(userCodes.get(userCode)); }

  async consume(id) { this.items.get(id).payload.consumed = Math.floor(Date.now() / 1000); }

  async destroy(id) { this.items.delete(id); }

  async revokeByGrantId(grantId) {
    for (const [items, id] of grantMembers.get(grantId) ?? []) items.delete(id);
    grantMembers.delete(grantId);
  }
}

const { privateKey } = await generateKeyPair(alg, { extractable: true });
const jwk = { ...(await exportJWK(privateKey)), alg, use: 'sig', kid: 'k1' };

const provider = new Provider(issuer, {
  adapter: MemoryStore,
  jwks: { keys: [jwk] },
  clients: [{
    client_id: 'bench', client_secret: secret,
    grant_types: ['client_credentials', 'authorization_code', 'refresh_token'],
    response_types: ['code'], redirect_uris: [redirectUri],
    token_endpoint_auth_method: 'client_secret_post',
  }, {
    client_id: 'bench-public',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'], redirect_uris: [redirectUri],
    token_endpoint_auth_method: 'none',
  }],
  // The default ID token alg is RS256, and the keystore holds one ES256 key: a registration that
  // names no alg would be refused (400 invalid_client_metadata). Static clients get it too.
  clientDefaults: { id_token_signed_response_alg: alg },
  scopes: ['tools:read', 'tools:write'],
  cookies: { keys: [cookieKey] },
  // Every subject exists (there is no user store to measure); claims are just `sub`.
  findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  // The default issues refresh tokens only for `offline_access` (an OpenID scope); Concierge
  // issues one with every code redemption for a client allowed the refresh_token grant.
  issueRefreshToken: (ctx, client) => client.grantTypeAllowed('refresh_token'),
  // The default ties codes and tokens without `offline_access` to the browser session; here, as in
  // Concierge, a refresh token outlives the session (and a fixture needs no session of its own).
  expiresWithSession: () => false,
  // Concierge requires PKCE (S256) of every client; the default only of public ones.
  pkce: { required: () => true },
  // rotateRefreshToken stays the default: it rotates on every use for public clients
  // (`token_endpoint_auth_method: none`), which is `bench-public`.
  ttl: {
    // Long enough that no seeded fixture expires during a run. Codes issued by /auth at run time
    // keep the default 60 s (see seeding: the seeded codes carry their own lifetime).
    AuthorizationCode: 60,
    RefreshToken: 4 * HOUR,
    Session: 4 * HOUR,
    Grant: 4 * HOUR,
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    registration: { enabled: true }, // open: no initial access token
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      getResourceServerInfo: () => ({ scope: 'tools:read tools:write', audience: resource, accessTokenFormat: 'jwt', jwt: { sign: { alg } } }),
      useGrantedResource: () => true,
    },
  },
});
provider.proxy = false;

// One Grant per seeded token, as a separate authorization would make: a refresh token's reuse or
// revocation revokes its whole grant, which must not take other fixtures down with it. It holds
// what consent would record: tools:read is an OP scope here too (`scopes` above), so /auth
// checks it among the OpenID scopes as well as among the resource's scopes.
async function seedGrant(clientId) {
  const grant = new provider.Grant({ accountId, clientId });
  grant.addOIDCScope(scope);
  grant.addResourceScope(resource, scope);
  return grant.save();
}

const loginTs = Math.floor(Date.now() / 1000); // when `bench-user` "signed in"

// A refresh token as code redemption issues it (gty authorization_code, never rotated yet).
async function seedRefreshToken(client) {
  const grantId = await seedGrant(client.clientId);
  return new provider.RefreshToken({
    accountId, client, grantId, gty: 'authorization_code', resource, scope,
    rotations: 0, authTime: loginTs,
  }).save();
}

function writeLines(name, values) {
  writeFileSync(join(outDir, name), values.join('\n') + '\n');
}

const started = process.hrtime.bigint();
const bench = await provider.Client.find('bench');
const benchPublic = await provider.Client.find('bench-public');
mkdirSync(outDir, { recursive: true });

// Codes as /auth issues them for the request in cookie.txt; `expiresIn` overrides the 60 s ttl.
const codes = [];
for (let i = 0; i < count; i += 1) {
  const grantId = await seedGrant('bench');
  codes.push(await new provider.AuthorizationCode({
    accountId, client: bench, grantId, scope, resource, redirectUri,
    codeChallenge: challenge, codeChallengeMethod: 'S256', authTime: loginTs,
    expiresIn: 4 * HOUR,
  }).save());
}
writeLines('codes.txt', codes);

const refresh = [];
for (let i = 0; i < count; i += 1) refresh.push(await seedRefreshToken(benchPublic));
writeLines('refresh.txt', refresh);

const revoke = [];
for (let i = 0; i < count; i += 1) revoke.push(await seedRefreshToken(bench));
writeLines('revoke.txt', revoke);

// A signed-in session holding a grant for `bench` that covers tools:read at the resource: /auth
// then finds nothing to ask (no login, no consent) and redirects with a code. The session keeps
// its id across requests (only a new login resets it), so the one cookie stays valid.
const session = new provider.Session();
session.loginAccount({ accountId, loginTs });
session.ensureClientContainer('bench');
session.grantIdFor('bench', await seedGrant('bench'));
await session.save(4 * HOUR);
// koa's `cookies` signs "name=value" with keygrip: HMAC-SHA1, base64 made URL-safe, no padding.
const sessionCookie = `${provider.cookieName('session')}=${session.id}`;
const sig = createHmac('sha1', cookieKey).update(sessionCookie).digest('base64')
  .replace(/[/+=]/g, (c) => ({ '/': '_', '+': '-', '=': '' })[c]);
writeLines('cookie.txt', [`${sessionCookie}; ${provider.cookieName('session')}.sig=${sig}`]);

const route = (name) => new URL(provider.urlFor(name)).pathname;
writeLines('paths.txt', [
  ['token', route('token')],
  ['introspection', route('introspection')],
  ['revocation', route('revocation')],
  ['registration', route('registration')],
  ['authorization', route('authorization')],
  ['jwks', route('jwks')],
  ['discovery', '/.well-known/openid-configuration'],
  ['oauth_discovery', '/.well-known/oauth-authorization-server'], // RFC 8414, served as well
].map((p) => p.join(' ')));

const seconds = Number(process.hrtime.bigint() - started) / 1e9;
const rss = Math.round(process.memoryUsage().rss / 2 ** 20);
console.log(`seeded ${count} codes, ${count} refresh tokens (bench-public), ${count} refresh tokens (bench) in ${seconds.toFixed(1)} s; rss ${rss} MiB`);

// The port opens only now: discovery answers once every fixture is in place.
provider.listen(port, '127.0.0.1', () => console.log(`peer-paths ready on ${port}`));
