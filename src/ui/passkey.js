// Passkeys (WebAuthn) on Concierge's pages: registering one on the account security page,
// signing in with one (a button, and the browser's autofill where it offers passkeys), and
// the second step after a password. Served as /static/passkey.js under the pages'
// Content-Security-Policy (script-src 'self', connect-src 'self'): no inline script, no other
// origin. Each page says where the server is (data-base: the issuer's path) and carries its
// anti-forgery token (data-csrf), sent in the X-CSRF-Token header of every request.
(() => {
  'use strict';

  const fromB64u = (s) => {
    const b64 = s.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((s.length + 3) % 4);
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i += 1) out[i] = bin.charCodeAt(i);
    return out.buffer;
  };
  const toB64u = (buf) => {
    let bin = '';
    for (const b of new Uint8Array(buf)) bin += String.fromCharCode(b);
    return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  };

  const supported = () => typeof window.PublicKeyCredential === 'function' && !!navigator.credentials;

  // POST JSON to the server; the answer's JSON, or an Error carrying the server's
  // description (and, for a session too old for the change, where to sign in again).
  async function post(el, path, body) {
    const res = await fetch(el.dataset.base + path, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': el.dataset.csrf },
      body: JSON.stringify(body),
    });
    let json = {};
    try { json = await res.json(); } catch (_) { /* not JSON: the generic message below */ }
    if (!res.ok) {
      const err = new Error(json.error_description || 'Something went wrong. Reload the page and try again.');
      err.location = json.location;
      throw err;
    }
    return json;
  }

  function showError(message) {
    const p = document.getElementById('passkey-error');
    if (!p) return;
    p.textContent = message;
    p.hidden = false;
  }

  function failed(err) {
    if (err && err.location) {
      window.location.assign(err.location);
      return;
    }
    if (err && (err.name === 'NotAllowedError' || err.name === 'AbortError')) {
      showError('The passkey request was cancelled or timed out. Try again.');
      return;
    }
    showError(err && err.message ? err.message : 'Something went wrong. Try again.');
  }

  const creationOptions = (o) => {
    const pk = { ...o.publicKey };
    pk.challenge = fromB64u(pk.challenge);
    pk.user = { ...pk.user, id: fromB64u(pk.user.id) };
    pk.excludeCredentials = (pk.excludeCredentials || []).map((c) => ({ ...c, id: fromB64u(c.id) }));
    return pk;
  };
  const requestOptions = (o) => {
    const pk = { ...o.publicKey };
    pk.challenge = fromB64u(pk.challenge);
    pk.allowCredentials = (pk.allowCredentials || []).map((c) => ({ ...c, id: fromB64u(c.id) }));
    return pk;
  };
  const registration = (cred) => ({
    id: cred.id,
    rawId: toB64u(cred.rawId),
    type: cred.type,
    response: {
      attestationObject: toB64u(cred.response.attestationObject),
      clientDataJSON: toB64u(cred.response.clientDataJSON),
      transports: typeof cred.response.getTransports === 'function' ? cred.response.getTransports() : undefined,
    },
    extensions: cred.getClientExtensionResults(),
  });
  const assertion = (cred) => ({
    id: cred.id,
    rawId: toB64u(cred.rawId),
    type: cred.type,
    response: {
      authenticatorData: toB64u(cred.response.authenticatorData),
      clientDataJSON: toB64u(cred.response.clientDataJSON),
      signature: toB64u(cred.response.signature),
      userHandle: cred.response.userHandle ? toB64u(cred.response.userHandle) : null,
    },
    extensions: cred.getClientExtensionResults(),
  });

  // The account security page: add a passkey under the name typed.
  function registerForm(form) {
    form.hidden = false;
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      try {
        const options = await post(form, '/account/security/passkeys/options', {});
        const cred = await navigator.credentials.create({ publicKey: creationOptions(options) });
        const name = form.querySelector('[name="name"]').value;
        const done = await post(form, '/account/security/passkeys', {
          ceremony: options.ceremony, credential: registration(cred), name,
        });
        window.location.assign(done.redirect);
      } catch (err) {
        failed(err);
      }
    });
  }

  // One assertion: options from `optionsPath`, the browser's answer to `answerPath`, then on
  // to where the server says. `mediation` 'conditional' waits for the autofill.
  async function assert(el, optionsPath, answerPath, extra, mediation, signal) {
    const options = await post(el, optionsPath, extra);
    const request = { publicKey: requestOptions(options) };
    if (mediation) request.mediation = mediation;
    if (signal) request.signal = signal;
    const cred = await navigator.credentials.get(request);
    const done = await post(el, answerPath, { ...extra, ceremony: options.ceremony, credential: assertion(cred) });
    window.location.assign(done.redirect);
  }

  // The sign-in page: a button, and the autofill when the browser offers it.
  async function signinSection(section) {
    section.hidden = false;
    const extra = { return_to: section.dataset.returnTo || '' };
    let autofill = null;
    let autofillSettled = Promise.resolve();
    const button = document.getElementById('passkey-signin-button');
    button.addEventListener('click', async () => {
      // One request at a time: the autofill's ends before the button's starts.
      if (autofill) autofill.abort();
      autofill = null;
      await autofillSettled;
      try {
        await assert(section, '/signin/passkey/options', '/signin/passkey', extra);
      } catch (err) {
        failed(err);
      }
    });
    if (section.dataset.autofill === 'off' || typeof PublicKeyCredential.isConditionalMediationAvailable !== 'function') return;
    try {
      if (!(await PublicKeyCredential.isConditionalMediationAvailable())) return;
      autofill = new AbortController();
      const running = assert(section, '/signin/passkey/options', '/signin/passkey', extra, 'conditional', autofill.signal);
      autofillSettled = running.catch(() => {});
      await running;
    } catch (err) {
      // Cancelled for the button, or nothing chosen: the form stays as it is.
      if (err && err.name !== 'AbortError' && err.name !== 'NotAllowedError') failed(err);
    }
  }

  // The second step after a password.
  function secondSection(section) {
    const button = document.getElementById('passkey-second-button');
    button.hidden = false;
    const extra = { return_to: section.dataset.returnTo || '', pending: section.dataset.pending };
    button.addEventListener('click', async () => {
      try {
        await assert(section, '/signin/code/passkey/options', '/signin/code/passkey', extra);
      } catch (err) {
        failed(err);
      }
    });
  }

  function start() {
    if (!supported()) return;
    const form = document.getElementById('passkey-register');
    if (form) registerForm(form);
    const second = document.getElementById('passkey-second');
    if (second) secondSection(second);
    const signin = document.getElementById('passkey-signin');
    if (signin) signinSection(signin);
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
