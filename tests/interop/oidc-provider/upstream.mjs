// node-oidc-provider (npm oidc-provider, OpenID certified) as an upstream OpenID Connect
// provider for Concierge's "Sign in with …" (tests/api/upstream.rs): the code flow with PKCE,
// client_secret_basic, RS256 ID tokens, claims in userinfo (its default), RFC 9207 `iss`, and
// its development login and consent pages, which accept any login name.
// Usage: node upstream.mjs PORT REDIRECT_URI. Prints one JSON line once it listens.
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const [port, redirectUri] = process.argv.slice(2);
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), alg: 'RS256', use: 'sig', kid: 'upstream-1' };
const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  jwks: { keys: [jwk] },
  clients: [{
    client_id: 'concierge',
    client_secret: 'concierge-secret-0123456789abcdef0123456789abcdef',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: [redirectUri],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: `${id}@upstream.example`, email_verified: true, name: `User ${id}` };
      },
    };
  },
  features: { devInteractions: { enabled: true } },
});
provider.proxy = false;
provider.listen(Number(port), '127.0.0.1', () => {
  console.log(JSON.stringify({ issuer }));
});
