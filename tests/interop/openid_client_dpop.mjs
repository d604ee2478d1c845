// openid-client (not ours) with DPoP (RFC 9449) against Concierge, which requires server
// nonces: a DPoP-bound client credentials grant, then the code flow with dpop_jkt (Chromium
// does the user's part), a bound refresh, and a protected resource request at /userinfo.
// The library's own DPoP handle makes every proof and retries on use_dpop_nonce.
//
//   node openid_client_dpop.mjs <issuer> <resource> <client_id> <secret> <username> <password> <profile-dir>
import * as client from 'openid-client';
import { launch, authorize } from './lib.mjs';

const [issuer, resource, id, secret, username, password, profile] = process.argv.slice(2);
const insecure = { execute: [client.allowInsecureRequests] }; // the test issuer is http on loopback
const explain = (step) => (e) => {
  console.error(step, e.name, e.message, e.error, e.error_description, e.cause ? JSON.stringify(e.cause) : '');
  process.exit(1);
};
const server = new URL(issuer);
const payload = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());

// Client credentials with a DPoP-bound token.
const machine = await client.discovery(server, id, undefined, client.ClientSecretPost(secret), insecure);
const machineDPoP = client.getDPoPHandle(machine, await client.randomDPoPKeyPair());
const cc = await client.clientCredentialsGrant(machine, { resource, scope: 'notes:read' }, { DPoP: machineDPoP })
  .catch(explain('client_credentials'));

// The code flow, bound from the authorization request on (dpop_jkt, RFC 9449 §10).
const redirectUri = 'http://127.0.0.1:47919/callback';
const config = await client.dynamicClientRegistration(server, {
  client_name: 'openid-client DPoP interop',
  redirect_uris: [redirectUri],
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'none',
  dpop_bound_access_tokens: true,
}, client.None(), insecure).catch(explain('registration'));
const dpop = client.getDPoPHandle(config, await client.randomDPoPKeyPair('ES256'));
const verifier = client.randomPKCECodeVerifier();
const state = client.randomState();
const nonce = client.randomNonce();
const url = client.buildAuthorizationUrl(config, {
  redirect_uri: redirectUri,
  scope: 'openid email offline_access notes:read',
  code_challenge: await client.calculatePKCECodeChallenge(verifier),
  code_challenge_method: 'S256',
  state,
  nonce,
  resource,
  dpop_jkt: await dpop.calculateThumbprint(),
});
const ctx = await launch(profile);
let seen;
try {
  seen = await authorize(ctx, url.href, { username, password, redirectPrefix: redirectUri });
} finally {
  await ctx.close();
}
const tokens = await client.authorizationCodeGrant(config, new URL(seen.callback), {
  pkceCodeVerifier: verifier,
  expectedState: state,
  expectedNonce: nonce,
  idTokenExpected: true,
}, undefined, { DPoP: dpop }).catch(explain('authorization_code'));
const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token, undefined, { DPoP: dpop })
  .catch(explain('refresh'));
const res = await client.fetchProtectedResource(
  config, refreshed.access_token, new URL(`${issuer}/userinfo`), 'GET', undefined, undefined, { DPoP: dpop },
).catch(explain('userinfo'));
const userinfo = await res.json();

console.log(JSON.stringify({
  ccTokenType: cc.token_type,
  ccJkt: payload(cc.access_token).cnf?.jkt ?? null,
  codeTokenType: tokens.token_type,
  codeJkt: payload(tokens.access_token).cnf?.jkt ?? null,
  expectedCodeJkt: await dpop.calculateThumbprint(),
  refreshedTokenType: refreshed.token_type,
  refreshedJkt: payload(refreshed.access_token).cnf?.jkt ?? null,
  userinfoStatus: res.status,
  userinfo,
}));
