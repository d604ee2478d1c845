// openid-client (not ours) against Concierge's machine-facing grants: client credentials,
// token exchange (its generic grant request), introspection, revocation, and the device
// authorization grant with Chromium approving on the device page.
//
//   node openid_client_machine.mjs <issuer> <client_id> <secret> <introspector_id> <introspector_secret>
//       <source_resource> <target_resource> <device_client_id> <username> <password> <profile-dir>
import * as client from 'openid-client';
import { launch, approveDevice } from './lib.mjs';

const [issuer, id, secret, rsId, rsSecret, source, target, deviceId, username, password, profile] = process.argv.slice(2);
const insecure = { execute: [client.allowInsecureRequests] }; // the test issuer is http on loopback
const explain = (step) => (e) => {
  console.error(step, e.name, e.message, e.error, e.error_description);
  process.exit(1);
};
const server = new URL(issuer);
const machine = await client.discovery(server, id, undefined, client.ClientSecretPost(secret), insecure);
const rs = await client.discovery(server, rsId, undefined, client.ClientSecretPost(rsSecret), insecure);
const device = await client.discovery(server, deviceId, undefined, client.None(), insecure);

const cc = await client.clientCredentialsGrant(machine, { resource: source, scope: 'calendar:read' }).catch(explain('client_credentials'));
const introspected = await client.tokenIntrospection(rs, cc.access_token).catch(explain('introspection'));
const exchanged = await client.genericGrantRequest(machine, 'urn:ietf:params:oauth:grant-type:token-exchange', {
  subject_token: cc.access_token,
  subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
  resource: target,
}).catch(explain('token exchange'));
await client.tokenRevocation(machine, cc.access_token).catch(explain('revocation'));
const afterRevoke = await client.tokenIntrospection(rs, cc.access_token).catch(explain('introspection'));

const started = await client.initiateDeviceAuthorization(device, { resource: target, scope: 'notes:read' }).catch(explain('device authorization'));
const ctx = await launch(profile);
let approved;
try {
  approved = await approveDevice(ctx, started.verification_uri_complete, { username, password });
} finally {
  await ctx.close();
}
const deviceTokens = await client.pollDeviceAuthorizationGrant(device, started).catch(explain('device polling'));

console.log(JSON.stringify({
  ccScope: cc.scope,
  introspectedActive: introspected.active,
  introspectedAud: introspected.aud,
  exchangedType: exchanged.issued_token_type,
  exchangedScope: exchanged.scope,
  afterRevokeActive: afterRevoke.active,
  deviceClient: approved.client,
  deviceResult: approved.result,
  deviceHasAccessToken: Boolean(deviceTokens.access_token),
}));
