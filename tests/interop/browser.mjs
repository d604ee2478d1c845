// Headless Chromium (Debian's package) doing a user's part, for the Rust integration tests.
//
//   node browser.mjs authorize <authorize-url> <username> <password> <redirect-prefix> <profile-dir> [deny]
//   node browser.mjs revoke <apps-url> <username> <password> <profile-dir>
//   node browser.mjs password <security-url> <username> <password> <new-password> <profile-dir>
//   node browser.mjs cut <apps-url> <username> <password> <hop-id> <profile-dir>
//
// UNTICK="scope …" unticks those scopes on the consent page before approving.
// Prints one JSON line with what it saw. The profile directory keeps cookies between runs.
import { launch, authorize, revokeFirst, changePassword, cutChain } from './lib.mjs';

const [action, ...args] = process.argv.slice(2);
let result;
if (action === 'authorize') {
  const [url, username, password, redirectPrefix, profile, decision] = args;
  const ctx = await launch(profile);
  try {
    result = await authorize(ctx, url, { username, password, redirectPrefix, decision: decision || 'approve',
      screenshot: process.env.SCREENSHOT, untick: (process.env.UNTICK || '').split(' ').filter(Boolean) });
  } finally {
    await ctx.close();
  }
} else if (action === 'revoke') {
  const [url, username, password, profile] = args;
  const ctx = await launch(profile);
  try {
    result = await revokeFirst(ctx, url, { username, password });
  } finally {
    await ctx.close();
  }
} else if (action === 'password') {
  const [url, username, password, newPassword, profile] = args;
  const ctx = await launch(profile);
  try {
    result = await changePassword(ctx, url, { username, password, newPassword, screenshot: process.env.SCREENSHOT });
  } finally {
    await ctx.close();
  }
} else if (action === 'cut') {
  const [url, username, password, hop, profile] = args;
  const ctx = await launch(profile);
  try {
    result = await cutChain(ctx, url, { username, password, hop, screenshot: process.env.SCREENSHOT });
  } finally {
    await ctx.close();
  }
} else {
  throw new Error(`unknown action ${action}`);
}
console.log(JSON.stringify(result));
