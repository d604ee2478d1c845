// The user's part of an authorization, without a browser: plain HTTP with a cookie jar,
// following Concierge's redirects by hand, filling in the sign-in form and approving the
// consent page, until a redirect goes to the client's redirect URI.
//
//   const user = new HttpUser(username, password);
//   const { callback, consent, signedIn } = await user.authorize(url, redirectUri);
//
// The cookie jar lives as long as the object, so a second authorization is single sign-on.
export class HttpUser {
  constructor(username, password) {
    this.username = username;
    this.password = password;
    this.cookies = new Map();
  }

  async #fetch(url, init = {}) {
    const headers = { ...init.headers };
    if (this.cookies.size) headers.cookie = [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    const res = await fetch(url, { ...init, headers, redirect: 'manual' });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const eq = pair.indexOf('=');
      this.cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
    return res;
  }

  // Open `url` (an authorization request); return the redirect back to the client, the
  // consent page's scopes (null when none was shown) and whether the user signed in.
  async authorize(url, redirectUri) {
    let res = await this.#fetch(url);
    let consent = null;
    let signedIn = false;
    for (let step = 0; step < 10; step++) {
      if (res.status >= 300 && res.status < 400) {
        const next = new URL(res.headers.get('location'), res.url || url).href;
        if (next.startsWith(redirectUri)) return { callback: next, consent, signedIn };
        res = await this.#fetch(next);
        continue;
      }
      const html = await res.text();
      if (res.status !== 200) throw new Error(`${res.status} from ${res.url}: ${html.slice(0, 300)}`);
      const form = formOf(html);
      if (html.includes('id="signin"')) {
        if (signedIn) throw new Error(`sign-in refused: ${html.match(/id="error">([^<]*)/)?.[1]}`);
        form.fields.push(['username', this.username], ['password', this.password]);
        signedIn = true;
      } else if (html.includes('id="approve"')) {
        consent = { scopes: [...html.matchAll(/data-scope="([^"]*)"/g)].map((m) => unescape(m[1])) };
        form.fields.push(['decision', 'approve']);
      } else {
        throw new Error(`neither sign-in nor consent at ${res.url}: ${html.slice(0, 300)}`);
      }
      res = await this.#fetch(new URL(form.action, res.url).href, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(form.fields).toString(),
      });
    }
    throw new Error('never sent back to the client');
  }
}

const unescape = (s) =>
  s
    .replaceAll('&quot;', '"')
    .replaceAll('&#x27;', "'")
    .replaceAll('&#x2f;', '/')
    .replaceAll('&lt;', '<')
    .replaceAll('&gt;', '>')
    .replaceAll('&amp;', '&');

// The page's POST form: its action, hidden inputs and ticked checkboxes (what a browser sends
// when the user changes nothing).
function formOf(html) {
  const action = html.match(/<form method="post" action="([^"]*)"/)?.[1];
  if (!action) throw new Error('no form on the page');
  const inputs = [
    ...html.matchAll(/<input type="hidden" name="([^"]*)" value="([^"]*)">/g),
    ...html.matchAll(/<input type="checkbox"[^>]* name="([^"]*)" value="([^"]*)" checked>/g),
  ];
  const fields = inputs.map((m) => [unescape(m[1]), unescape(m[2])]);
  return { action: unescape(action), fields };
}
