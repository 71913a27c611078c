#!/usr/bin/env python3
"""Tiny auth-injecting reverse proxy (stdlib only).
usage: mcp_authproxy.py LISTEN_PORT UPSTREAM_BASE_URL   (token from $MCP_TOKEN)
Passes method, path, headers (Host included, verbatim), body through; adds
Authorization: Bearer $MCP_TOKEN; streams the response (SSE-safe)."""
import http.client, os, sys, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1]); UP = urllib.parse.urlsplit(sys.argv[2]); TOKEN = os.environ["MCP_TOKEN"]
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization", "proxy-authenticate"}

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, fmt, *a):
        if os.environ.get("PROXY_LOG"): sys.stderr.write("proxy: " + (fmt % a) + "\n")
    def _go(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        c = http.client.HTTPConnection(UP.hostname, UP.port, timeout=600)
        c.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for k, v in self.headers.items():
            if k.lower() in HOP or k.lower() == "authorization": continue
            c.putheader(k, v)
        c.putheader("Authorization", "Bearer " + TOKEN)
        c.endheaders(body)
        r = c.getresponse()
        self.send_response_only(r.status, r.reason)
        clen = r.getheader("Content-Length")
        for k, v in r.getheaders():
            if k.lower() in HOP: continue
            self.send_header(k, v)
        chunked = clen is None and self.command != "HEAD" and r.status not in (204, 304)
        if chunked: self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            while True:
                d = r.read1(65536) if chunked else r.read(65536)
                if not d: break
                if chunked: self.wfile.write(b"%x\r\n%s\r\n" % (len(d), d))
                else: self.wfile.write(d)
                self.wfile.flush()
            if chunked: self.wfile.write(b"0\r\n\r\n"); self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            c.close()
    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_OPTIONS = do_HEAD = _go

ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", PORT), H).serve_forever()
