"""The app behind the sidecar in ci/qemu-e2e.sh: answers every GET with who called, as the
sidecar passed it on (the caller's app ID and SPIFFE ID, taken from the mTLS handshake).
Binds 127.0.0.1:0 and prints `app: listening port=<port>`."""
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    def do_GET(self):
        caller = self.headers.get("dapr-caller-app-id", "-")
        spiffe = self.headers.get("x-sigil-caller-spiffe-id", "-")
        body = f"hello {caller} as {spiffe} on {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        print("app:", fmt % args, flush=True)


server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
print(f"app: listening port={server.server_address[1]}", flush=True)
server.serve_forever()
