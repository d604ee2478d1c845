// openid-client (OpenID certified, not ours) against Concierge: discovery, dynamic
// registration, authorization code + PKCE (Chromium does the user's part), ID token
// validation, userinfo and refresh, all under the library's own checks.
//
//   node openid_client.mjs <issuer> <resource> <username> <password> <profile-dir>
import * as client from 'openid-client';
import { launch, authorize } from './lib.mjs';

const [issuer, resource, username, password, profile] = process.argv.slice(2);
const redirectUri = 'http://127.0.0.1:47919/callback';
const insecure = { execute: [client.allowInsecureRequests] }; // the test issuer is http on loopback

const server = new URL(issuer);
const registration = await client.dynamicClientRegistration(server, {
  client_name: 'openid-client interop',
  redirect_uris: [redirectUri],
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
}, client.ClientSecretBasic(), insecure);
const config = registration;
const meta = config.serverMetadata();

const verifier = client.randomPKCECodeVerifier();
const challenge = await client.calculatePKCECodeChallenge(verifier);
const state = client.randomState();
const nonce = client.randomNonce();
const url = client.buildAuthorizationUrl(config, {
  redirect_uri: redirectUri,
  scope: 'openid profile email offline_access notes:read',
  code_challenge: challenge,
  code_challenge_method: 'S256',
  state,
  nonce,
  resource,
});

const ctx = await launch(profile);
let seen;
try {
  seen = await authorize(ctx, url.href, { username, password, redirectPrefix: redirectUri });
} finally {
  await ctx.close();
}

const explain = (e) => {
  console.error(e.name, e.message, e.error, e.error_description, e.cause ? JSON.stringify(e.cause) : '');
  process.exit(1);
};
const tokens = await client.authorizationCodeGrant(config, new URL(seen.callback), {
  pkceCodeVerifier: verifier,
  expectedState: state,
  expectedNonce: nonce,
  idTokenExpected: true,
}).catch(explain);
const idClaims = tokens.claims();
const userinfo = await client.fetchUserInfo(config, tokens.access_token, idClaims.sub).catch(explain);
const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token).catch(explain);

console.log(JSON.stringify({
  issuer: meta.issuer,
  clientId: config.clientMetadata().client_id,
  consent: seen.consent,
  sub: idClaims.sub,
  idTokenAud: idClaims.aud,
  idTokenNonce: idClaims.nonce,
  tokenType: tokens.token_type,
  hasRefresh: Boolean(tokens.refresh_token),
  userinfo,
  refreshedSub: refreshed.claims()?.sub,
  refreshedAccessToken: Boolean(refreshed.access_token),
}));
