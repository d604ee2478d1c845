"""The official MCP Python SDK client (`ClientSession` over `streamable_http_client`, with its
`OAuthClientProvider` as the httpx auth) against the server of docs/guides/python-mcp-server.md
(fastmcp_server.py): a bare 401, discovery (RFC 9728, then RFC 8414), registration (RFC 7591),
the code flow with PKCE and `resource`, the tools, and the 403 insufficient_scope step-up for
add_note. The user's part is plain HTTP with a cookie jar: no browser needed.

    python mcp_py_sdk_guide.py <mcp-url> <username> <password>

Prints one JSON line: every HTTP exchange the SDK made (no tokens), the authorization requests,
the tool results and the scope finally granted.
"""

import asyncio
import html
import json
import re
import sys
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx2
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

MCP_URL, USERNAME, PASSWORD = sys.argv[1:4]
# A loopback redirect URI (RFC 8252 §7.3); the user agent stops at the redirect to it.
REDIRECT_URI = "http://127.0.0.1:7/callback"

out: dict = {}
trail: list[dict] = []  # method, URL, status, challenge: never a token


async def record(response: httpx2.Response) -> None:
    trail.append(
        {
            "method": response.request.method,
            "url": str(response.request.url),
            "status": response.status_code,
            "wwwAuthenticate": response.headers.get("www-authenticate"),
        }
    )


class Memory(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


def form_of(page: str) -> tuple[str, list[tuple[str, str]]]:
    """The page's POST form: its action, hidden inputs and ticked checkboxes (what a browser
    sends when the user changes nothing)."""
    action = re.search(r'<form method="post" action="([^"]*)"', page)
    if action is None:
        raise RuntimeError(f"no form on the page: {page[:300]}")
    hidden = re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', page)
    hidden += re.findall(r'<input type="checkbox"[^>]* name="([^"]*)" value="([^"]*)" checked>', page)
    return html.unescape(action[1]), [(html.unescape(k), html.unescape(v)) for k, v in hidden]


class HttpUser:
    """redirect_handler and callback_handler: the user signs in and approves over plain HTTP
    (a cookie jar, redirects followed by hand) until Concierge redirects to REDIRECT_URI."""

    def __init__(self) -> None:
        self.http = httpx2.AsyncClient(follow_redirects=False, timeout=30)
        self.authorizations: list[dict] = []
        self.callback_url: str | None = None

    async def redirect(self, authorization_url: str) -> None:
        q = parse_qs(urlsplit(authorization_url).query)
        seen = {
            "scope": q.get("scope", [None])[0],
            "resource": q.get("resource", [None])[0],
            "codeChallengeMethod": q.get("code_challenge_method", [None])[0],
            "consent": None,
            "signedIn": False,
        }
        self.authorizations.append(seen)
        r = await self.http.get(authorization_url)
        for _ in range(10):
            if r.is_redirect:
                target = urljoin(str(r.url), r.headers["location"])
                if target.startswith(REDIRECT_URI):
                    self.callback_url = target
                    return
                r = await self.http.get(target)
                continue
            if r.status_code != 200:
                raise RuntimeError(f"{r.status_code} from {r.url}: {r.text[:300]}")
            action, fields = form_of(r.text)
            if 'id="signin"' in r.text:
                if seen["signedIn"]:
                    raise RuntimeError("sign-in refused")
                fields += [("username", USERNAME), ("password", PASSWORD)]
                seen["signedIn"] = True
            elif 'id="approve"' in r.text:
                seen["consent"] = {"scopes": [html.unescape(s) for s in re.findall(r'data-scope="([^"]*)"', r.text)]}
                fields.append(("decision", "approve"))
            else:
                raise RuntimeError(f"neither sign-in nor consent at {r.url}: {r.text[:300]}")
            form = {"content-type": "application/x-www-form-urlencoded"}
            r = await self.http.post(urljoin(str(r.url), action), content=urlencode(fields), headers=form)
        raise RuntimeError("never sent back to the client")

    async def callback(self) -> AuthorizationCodeResult:
        target, self.callback_url = self.callback_url, None
        if target is None:
            raise RuntimeError("no redirect came back")
        q = parse_qs(urlsplit(target).query)
        one = lambda k: q.get(k, [None])[0]  # noqa: E731
        self.authorizations[-1].update(iss=one("iss"), error=one("error"))
        if one("code") is None:
            raise RuntimeError(f"no code came back: {one('error')} {one('error_description')}")
        return AuthorizationCodeResult(code=one("code"), state=one("state"), iss=one("iss"))


def as_json(result) -> dict:
    if result.is_error:
        raise RuntimeError(f"tool error: {result.content}")
    return result.structured_content or json.loads(result.content[0].text)


async def main() -> None:
    user = HttpUser()
    storage = Memory()
    provider = OAuthClientProvider(
        server_url=MCP_URL,
        client_metadata=OAuthClientMetadata(
            client_name="MCP Python SDK guide interop",
            redirect_uris=[REDIRECT_URI],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=user.redirect,
        callback_handler=user.callback,
    )
    try:
        # The first request meets the bare 401; the provider discovers, registers, sends the
        # user through sign-in and consent, redeems the code and retries, all inside the httpx
        # auth flow. add_note meets the 403 insufficient_scope, and the provider steps up by
        # itself: it authorizes again for the granted and the challenged scopes, then retries.
        async with httpx2.AsyncClient(auth=provider, event_hooks={"response": [record]}, timeout=60) as http:
            async with streamable_http_client(MCP_URL, http_client=http) as (read, write):
                async with ClientSession(read, write) as s:
                    await s.initialize()
                    out["clientId"] = storage.client.client_id if storage.client else None
                    out["tools"] = sorted(t.name for t in (await s.list_tools()).tools)
                    out["whoami"] = as_json(await s.call_tool("whoami", {}))
                    out["listBefore"] = as_json(await s.call_tool("list_notes", {}))
                    out["addNote"] = as_json(await s.call_tool("add_note", {"text": "written by the Python SDK"}))
                    out["listAfter"] = as_json(await s.call_tool("list_notes", {}))
        out["grantedScope"] = storage.tokens.scope if storage.tokens else None
    except BaseException:
        print(json.dumps({**out, "authorizations": user.authorizations, "trail": trail}), file=sys.stderr)
        raise
    finally:
        await user.http.aclose()
    out["authorizations"] = user.authorizations
    out["trail"] = trail
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
