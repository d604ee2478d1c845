// node-oidc-provider (npm oidc-provider, OpenID certified) as a peer issuer for the guard:
// client_credentials JWT access tokens for one resource (RFC 8707 resource indicators,
// RFC 9068 format), DPoP-bound when the token request carries a proof (RFC 9449).
// Usage: node peer.mjs PORT RESOURCE. Prints one JSON line once it listens.
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const [port, resource] = process.argv.slice(2);
const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const jwk = { ...privateKey.export({ format: 'jwk' }), alg: 'ES256', use: 'sig', kid: 'peer-1' };
const provider = new Provider(`http://127.0.0.1:${port}`, {
  jwks: { keys: [jwk] },
  clients: [{
    client_id: 'agent',
    client_secret: 'agent-secret-0123456789abcdef0123456789abcdef',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_post',
    id_token_signed_response_alg: 'ES256',
  }],
  scopes: ['notes:read', 'notes:write'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    dPoP: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      getResourceServerInfo: () => ({
        scope: 'notes:read notes:write',
        audience: resource,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      }),
      useGrantedResource: () => true,
    },
  },
});
provider.proxy = false;
provider.listen(Number(port), '127.0.0.1', () => {
  console.log(JSON.stringify({ issuer: `http://127.0.0.1:${port}` }));
});
