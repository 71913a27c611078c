"""A real MCP client (the Python SDK, 2.x) for the MCP endpoint's tests.

Usage: mcp_client.py URL TOKEN MODE
  MODE: legacy (the 2025-11-25 initialize handshake) or 2026-07-28
        (server/discover; the run fails unless the server picks 2026-07-28).

Reads one JSON request per line on stdin and answers one JSON line each:
  {"tool": NAME, "args": {...}}  -> {"is_error", "structured", "text"}
                                    or {"rpc_error": {"code", "message"}}
  {"list_tools": true}           -> {"tools": [{"name", "input_schema", "output_schema", "annotations"}]}
The first line written is {"protocol_version": ...}.
"""
import asyncio
import json
import sys

import httpx2
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(url, token, mode):
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx2.Timeout(30.0, read=120.0),
    )
    async with http:
        client_mode = "legacy" if mode == "legacy" else "auto"
        async with Client(streamable_http_client(url, http_client=http), mode=client_mode) as client:
            if mode != "legacy" and client.protocol_version != mode:
                sys.exit(f"the server did not negotiate {mode} (got {client.protocol_version})")
            out({"protocol_version": client.protocol_version})
            loop = asyncio.get_running_loop()
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line:
                    return
                req = json.loads(line)
                if req.get("list_tools"):
                    tools = await client.list_tools()
                    out({"tools": [
                        {
                            "name": t.name,
                            "input_schema": t.input_schema,
                            "output_schema": t.output_schema,
                            "annotations": t.annotations.model_dump(mode="json", by_alias=True, exclude_none=True)
                            if t.annotations else None,
                        }
                        for t in tools.tools
                    ]})
                    continue
                try:
                    res = await client.call_tool(req["tool"], req.get("args", {}))
                except MCPError as e:
                    out({"rpc_error": {"code": e.code, "message": e.message}})
                    continue
                except RuntimeError as e:
                    out({"client_error": str(e)})
                    continue
                out({
                    "is_error": bool(res.is_error),
                    "structured": res.structured_content,
                    "text": [c.text for c in res.content if getattr(c, "type", "") == "text"],
                })


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
