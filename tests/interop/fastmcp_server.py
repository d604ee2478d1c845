"""An MCP server in Python protected by Concierge, written with FastMCP's own pieces: its
`JWTVerifier` (Concierge's JWKS, issuer, this server's URL as the audience, a scope every
request needs) inside a `RemoteAuthProvider`, which serves the protected resource metadata
(RFC 9728) naming Concierge; and a small ASGI middleware that answers 403 `insufficient_scope`
for a tool that needs more scope (step-up). This is the server of
docs/guides/python-mcp-server.md; tests/api/fastmcp.rs runs it.

    python fastmcp_server.py <port> <concierge-issuer>

Serves `http://127.0.0.1:<port>/mcp` (registered in Concierge with `notes:read` and
`notes:write`, RS256, DPoP off) with three tools: whoami, list_notes, add_note (needs
notes:write), until killed.
"""

import json
import sys

import httpx2
from fastmcp import FastMCP
from fastmcp.server.auth import RemoteAuthProvider
from fastmcp.server.auth.providers.jwt import JWTVerifier
from fastmcp.server.dependencies import get_access_token
from starlette.middleware import Middleware

PORT, ISSUER = int(sys.argv[1]), sys.argv[2]
BASE = f"http://127.0.0.1:{PORT}"
# This server's URL exactly as registered in Concierge (`resource add --uri`): clients send it
# as `resource`, and Concierge puts it in the tokens' `aud`.
RESOURCE = f"{BASE}/mcp"
REQUIRED_SCOPES = ["notes:read"]  # every request
TOOL_SCOPES = {"add_note": ["notes:write"]}  # and these for these tools

# Concierge's metadata (RFC 8414) says where its JWKS is.
metadata = httpx2.get(f"{ISSUER}/.well-known/oauth-authorization-server").json()
assert metadata["issuer"] == ISSUER, f"metadata names issuer {metadata['issuer']}, not {ISSUER}"

# RS256 (JWTVerifier's default algorithm): the resource is registered with --token-alg RS256.
verifier = JWTVerifier(
    jwks_uri=metadata["jwks_uri"],
    issuer=ISSUER,
    audience=RESOURCE,
    required_scopes=REQUIRED_SCOPES,
)
auth = RemoteAuthProvider(
    token_verifier=verifier,
    authorization_servers=[ISSUER],
    base_url=BASE,
    scopes_supported=["notes:read", "notes:write"],
    resource_name="Notes (Python)",
)
RESOURCE_METADATA = f"{BASE}/.well-known/oauth-protected-resource/mcp"  # what auth serves


class ToolScopes:
    """Step-up (MCP authorization, "Scope Challenge Handling"): a `tools/call` for a tool whose
    scopes the token lacks is answered 403 insufficient_scope, naming the token's scopes plus
    the missing ones, so the client authorizes again with them. FastMCP's own per-tool checks
    (`auth=require_scopes(…)`, `AuthMiddleware`) answer inside the JSON-RPC result instead,
    which no client takes for a step-up. Runs after FastMCP's authentication middleware, which
    put the verified token in `scope["user"]`; without one it lets FastMCP answer 401."""

    def __init__(self, app, tool_scopes: dict[str, list[str]], resource_metadata: str):
        self.app, self.tool_scopes, self.resource_metadata = app, tool_scopes, resource_metadata

    async def __call__(self, scope, receive, send):
        token = getattr(scope.get("user"), "access_token", None)
        if scope["type"] != "http" or scope["method"] != "POST" or token is None:
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        missing = [s for s in self._needed(body) if s not in token.scopes]
        if not missing:
            replayed = False

            async def replay():
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            return await self.app(scope, replay, send)
        wanted = " ".join(dict.fromkeys([*token.scopes, *missing]))
        description = f"this tool needs {' '.join(missing)}"
        challenge = (
            f'Bearer error="insufficient_scope", scope="{wanted}", '
            f'resource_metadata="{self.resource_metadata}", error_description="{description}"'
        )
        answer = json.dumps({"error": "insufficient_scope", "error_description": description}).encode()
        headers = [(b"content-type", b"application/json"), (b"www-authenticate", challenge.encode())]
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    def _needed(self, body: bytes) -> list[str]:
        """The scopes the tools called in this JSON-RPC body need."""
        try:
            messages = json.loads(body)
        except ValueError:
            return []  # not JSON: FastMCP answers it
        needed: list[str] = []
        for m in messages if isinstance(messages, list) else [messages]:
            if isinstance(m, dict) and m.get("method") == "tools/call":
                needed += self.tool_scopes.get((m.get("params") or {}).get("name"), [])
        return list(dict.fromkeys(needed))


mcp = FastMCP("notes-py", auth=auth)
notes: dict[str, list[str]] = {}  # sub → notes


@mcp.tool
def whoami() -> dict:
    """Who the access token says is calling."""
    token = get_access_token()
    return {
        "sub": token.claims.get("sub"),
        "client_id": token.client_id,
        "scopes": token.scopes,
        "aud": token.claims.get("aud"),
    }


@mcp.tool
def list_notes() -> dict:
    """Your notes (needs notes:read)."""
    return {"notes": notes.get(get_access_token().claims["sub"], [])}


@mcp.tool
def add_note(text: str) -> dict:
    """Add a note (needs notes:write)."""
    notes.setdefault(get_access_token().claims["sub"], []).append(text)
    return {"added": text}


if __name__ == "__main__":
    mcp.run(
        transport="http",
        host="127.0.0.1",
        port=PORT,
        path="/mcp",
        middleware=[Middleware(ToolScopes, tool_scopes=TOOL_SCOPES, resource_metadata=RESOURCE_METADATA)],
        show_banner=False,
        log_level="warning",
    )
