"""A FastMCP server we did not write, protected by FastMCP's own `JWTVerifier` with its defaults
(RS256, Bearer tokens) plus the minimal settings from its docs: Concierge's JWKS, the issuer and
this server's URL as the audience. `RemoteAuthProvider` around it serves the protected resource
metadata (RFC 9728) that points clients at Concierge, as FastMCP documents for a remote AS.

    python fastmcp_server.py <port> <concierge-issuer>

Serves `http://127.0.0.1:<port>/mcp` with one tool, `whoami`, until killed.
"""

import sys

from fastmcp import FastMCP
from fastmcp.server.auth import RemoteAuthProvider
from fastmcp.server.auth.providers.jwt import JWTVerifier
from fastmcp.server.dependencies import get_access_token

PORT, ISSUER = int(sys.argv[1]), sys.argv[2]
BASE = f"http://127.0.0.1:{PORT}"

verifier = JWTVerifier(jwks_uri=f"{ISSUER}/jwks", issuer=ISSUER, audience=f"{BASE}/mcp")
auth = RemoteAuthProvider(token_verifier=verifier, authorization_servers=[ISSUER], base_url=BASE)
mcp = FastMCP("fastmcp-interop", auth=auth)


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


if __name__ == "__main__":
    mcp.run(transport="http", host="127.0.0.1", port=PORT, path="/mcp", show_banner=False, log_level="warning")
