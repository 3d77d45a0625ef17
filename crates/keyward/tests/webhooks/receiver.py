"""A webhook receiver for keyward's tests: it checks every delivery with the
`standardwebhooks` library (the reference implementation of the Standard
Webhooks signature) and records what arrived.

Prints its port on the first line of stdout, then serves until killed.
Control endpoints (JSON):
  POST /_secrets  {"secrets": ["whsec_…", …]}  the secrets to check with
  POST /_status   {"status": 500}               what deliveries are answered
  GET  /_events                                 what arrived, in order
  GET  /_count                                  how many arrived
Each delivery is recorded with the index of every secret it verified with
(the library's `verify`, or, when keyward's manual test clock puts the
timestamp outside the library's 5-minute tolerance, the library's `sign`
compared in constant time).
"""

import hmac
import json
import sys
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

STATE = {"secrets": [], "status": 200, "events": []}
LOCK = threading.Lock()


def verified_with(body, headers):
    """Indexes of the configured secrets that sign this delivery."""
    ok = []
    for i, secret in enumerate(STATE["secrets"]):
        wh = Webhook(secret)
        try:
            wh.verify(body, headers)
            ok.append(i)
            continue
        except WebhookVerificationError as e:
            if "timestamp" not in str(e).lower():
                continue
        # Outside the tolerance (a test clock): the signature itself.
        ts = datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=timezone.utc)
        expected = wh.sign(headers["webhook-id"], ts, body.decode()).split(",", 1)[1]
        for sig in headers["webhook-signature"].split(" "):
            version, _, value = sig.partition(",")
            if version == "v1" and hmac.compare_digest(value, expected):
                ok.append(i)
                break
    return ok


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, obj=None):
        body = json.dumps(obj).encode() if obj is not None else b""
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with LOCK:
            if self.path == "/_count":
                return self.answer(200, {"count": len(STATE["events"])})
            self.answer(200, STATE["events"])

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path == "/_secrets":
            with LOCK:
                STATE["secrets"] = json.loads(body)["secrets"]
            return self.answer(200, {})
        if self.path == "/_status":
            with LOCK:
                STATE["status"] = json.loads(body)["status"]
            return self.answer(200, {})
        headers = {k.lower(): v for k, v in self.headers.items()}
        with LOCK:
            record = {
                "id": headers.get("webhook-id"),
                "timestamp": headers.get("webhook-timestamp"),
                "signatures": len(headers.get("webhook-signature", "").split(" ")),
                "verifiedWith": verified_with(body, headers),
                "body": json.loads(body),
                "answered": STATE["status"],
            }
            STATE["events"].append(record)
            status = STATE["status"]
        self.answer(status, {"received": True, "padding": "x" * 2000})


class Server(ThreadingHTTPServer):
    # Several nodes send at once: a short listen backlog would refuse some.
    request_queue_size = 256
    daemon_threads = True


def main():
    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
