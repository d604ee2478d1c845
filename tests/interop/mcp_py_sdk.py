"""The official MCP Python SDK client (`ClientSession` over `streamable_http_client`, with its
`OAuthClientProvider` as the httpx auth) doing an agent's whole journey against an MCP server
protected by concierge-guard. The user's part runs in headless Chromium through the Node browser
helper (`browser.mjs`, playwright-core with Debian's chromium); the code comes back to a real
loopback listener.

    python mcp_py_sdk.py <mcp-url> <username> <password> <profile-dir> <token-for-another-resource>

Prints one JSON line: every HTTP exchange the SDK made, the authorization requests it sent to the
browser, the consent pages seen, the tool results, the step-up and the refusal.
"""

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

HERE = Path(__file__).resolve().parent
MCP_URL, USERNAME, PASSWORD, PROFILE, FOREIGN_TOKEN = sys.argv[1:6]

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


class LoopbackReceiver:
    """A client's loopback redirect URI (RFC 8252 §7.3) on 127.0.0.1 with an ephemeral port."""

    def __init__(self) -> None:
        self.arrived: asyncio.Queue[str] = asyncio.Queue()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.redirect_uri = f"http://127.0.0.1:{port}/callback"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = (await reader.readline()).decode("latin-1")
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        body = b"Signed in. You can close this window."
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()
        parts = request_line.split(" ")
        if len(parts) >= 2 and urlsplit(parts[1]).path == "/callback":
            await self.arrived.put(parts[1])


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


class Browser:
    """redirect_handler and callback_handler: the user signs in and consents in Chromium."""

    def __init__(self, receiver: LoopbackReceiver) -> None:
        self.receiver = receiver
        self.authorizations: list[dict] = []

    async def redirect(self, authorization_url: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            "node",
            "browser.mjs",
            "authorize",
            authorization_url,
            USERNAME,
            PASSWORD,
            self.receiver.redirect_uri,
            PROFILE,
            cwd=HERE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"browser.mjs failed: {stderr.decode()}")
        seen = json.loads(stdout.decode().strip().splitlines()[-1])
        q = parse_qs(urlsplit(authorization_url).query)
        self.authorizations.append(
            {
                "scope": q.get("scope", [None])[0],
                "resource": q.get("resource", [None])[0],
                "codeChallengeMethod": q.get("code_challenge_method", [None])[0],
                "consent": seen["consent"],
                "signedIn": seen["signedIn"],
            }
        )

    async def callback(self) -> AuthorizationCodeResult:
        target = await asyncio.wait_for(self.receiver.arrived.get(), 30)
        q = parse_qs(urlsplit(target).query)
        one = lambda k: q.get(k, [None])[0]  # noqa: E731
        self.authorizations[-1].update(iss=one("iss"), error=one("error"))
        if one("code") is None:
            raise RuntimeError(f"no code came back: {one('error')} {one('error_description')}")
        return AuthorizationCodeResult(code=one("code"), state=one("state"), iss=one("iss"))


def text(result) -> str:
    return "\n".join(c.text for c in result.content if c.type == "text")


async def main() -> None:
    receiver = LoopbackReceiver()
    await receiver.start()
    browser = Browser(receiver)
    storage = Memory()
    provider = OAuthClientProvider(
        server_url=MCP_URL,
        client_metadata=OAuthClientMetadata(
            client_name="MCP Python SDK interop",
            redirect_uris=[receiver.redirect_uri],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=browser.redirect,
        callback_handler=browser.callback,
    )
    try:
        # 1. The first request meets the bare 401; the provider discovers (RFC 9728, then
        # RFC 8414), registers (RFC 7591), sends the user through sign-in and consent, redeems
        # the code and retries, all inside the httpx auth flow.
        async with httpx2.AsyncClient(auth=provider, event_hooks={"response": [record]}, timeout=60) as http:
            async with streamable_http_client(MCP_URL, http_client=http) as (read, write):
                async with ClientSession(read, write) as s:
                    await s.initialize()
                    out["clientId"] = storage.client.client_id if storage.client else None
                    out["tools"] = sorted(t.name for t in (await s.list_tools()).tools)
                    out["whoami"] = text(await s.call_tool("whoami", {}))
                    out["listBefore"] = text(await s.call_tool("list_notes", {}))
                    # 2. add_note needs notes:write: the guard answers 403 insufficient_scope and
                    # the provider's own step-up re-authorizes with the union of the granted and
                    # the challenged scopes (SEP-2350), then retries the call.
                    out["addNote"] = text(await s.call_tool("add_note", {"text": "written by the Python SDK"}))
                    out["listAfter"] = text(await s.call_tool("list_notes", {}))
        out["grantedScope"] = storage.tokens.scope if storage.tokens else None

        # 3. A token for another resource: the guard refuses it (401 invalid_token), and the SDK
        # would have to authorize afresh.
        refusing = Memory()
        refusing.client = storage.client
        refusing.tokens = OAuthToken(access_token=FOREIGN_TOKEN, token_type="Bearer")

        async def would_reauthorize(url: str) -> None:
            out["foreignWouldReauthorize"] = True
            raise RuntimeError("not authorizing again")

        foreign_provider = OAuthClientProvider(
            server_url=MCP_URL,
            client_metadata=provider.context.client_metadata,
            storage=refusing,
            redirect_handler=would_reauthorize,
            callback_handler=browser.callback,
        )
        before = len(trail)
        # The provider logs the refusal of the re-authorization below with a traceback.
        logging.getLogger("mcp.client.auth").setLevel(logging.CRITICAL)
        try:
            async with httpx2.AsyncClient(
                auth=foreign_provider, event_hooks={"response": [record]}, timeout=60
            ) as http:
                async with streamable_http_client(MCP_URL, http_client=http) as (read, write):
                    async with ClientSession(read, write) as s:
                        await asyncio.wait_for(s.initialize(), 30)
            out["foreignConnected"] = True
        except BaseException as e:  # noqa: BLE001 - task groups wrap errors in groups
            out["foreignError"] = type(e).__name__
        out["foreign"] = next((t for t in trail[before:] if t["url"] == MCP_URL), None)
    except BaseException:
        print(json.dumps({**out, "authorizations": browser.authorizations, "trail": trail}), file=sys.stderr)
        raise
    finally:
        receiver.server.close()
    out["authorizations"] = browser.authorizations
    out["trail"] = trail
    print(json.dumps(out))


if __name__ == "__main__":
    os.environ.setdefault("CHROMIUM", "/usr/bin/chromium")
    asyncio.run(main())
