"""The official MCP Python SDK client (`ClientSession` over `streamable_http_client`) calling
the FastMCP server of `fastmcp_server.py` with access tokens Concierge issued, presented as
Bearer tokens on the client's httpx client.

    python fastmcp_py_client.py <mcp-url> <rs256-token> <es256-token>

Prints one JSON line: the tools and `whoami` with the RS256 token; for the ES256 token (from a
resource with the default settings) the status and challenge FastMCP answered.
"""

import asyncio
import json
import sys

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

MCP_URL, RS256_TOKEN, ES256_TOKEN = sys.argv[1:4]


async def main() -> None:
    out: dict = {}
    headers = {"Authorization": f"Bearer {RS256_TOKEN}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with streamable_http_client(MCP_URL, http_client=http) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                out["tools"] = sorted(t.name for t in (await s.list_tools()).tools)
                result = await s.call_tool("whoami", {})
                out["isError"] = result.is_error
                out["whoami"] = result.structured_content or json.loads(result.content[0].text)

    # The negative control: the same request with an ES256 token for another resource.
    async with httpx2.AsyncClient(timeout=30) as http:
        r = await http.post(
            MCP_URL,
            headers={
                "Authorization": f"Bearer {ES256_TOKEN}",
                "Accept": "application/json, text/event-stream",
                "Content-Type": "application/json",
            },
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "negative-control", "version": "1"},
                },
            },
        )
        out["es256"] = {"status": r.status_code, "wwwAuthenticate": r.headers.get("www-authenticate")}
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
