"""A webhook receiver for the tests: verifies every delivery with the
`standardwebhooks` package (an implementation gatehouse did not write) and
records what it saw in its directory:

- `port`: the port it listens on (written once it listens);
- `secret`: the endpoint's `whsec_` secret, written by the test, read per request;
- `script.json`: answers to give, in order, each {"status", "delay", "location",
  "retry_after"}; once they run out, every request is answered 204;
- `requests.jsonl`: one line per request: webhook-id, status answered, verified;
- `events.jsonl`: one line per verified and accepted delivery: webhook-id and event.
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError
except ImportError:
    sys.stderr.write("the standardwebhooks package is missing: pip install standardwebhooks\n")
    sys.exit(3)

DIR = sys.argv[1]
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 0
LOCK = threading.Lock()


def path(name):
    return os.path.join(DIR, name)


def next_answer():
    with LOCK:
        try:
            with open(path("script.json")) as f:
                script = json.load(f)
        except FileNotFoundError:
            script = []
        if not script:
            return {"status": 204}
        answer = script.pop(0)
        with open(path("script.json"), "w") as f:
            json.dump(script, f)
        return answer


def append(name, record):
    with LOCK:
        with open(path(name), "a") as f:
            f.write(json.dumps(record) + "\n")


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = next_answer()
        with open(path("secret")) as f:
            secret = f.read().strip()
        try:
            event = Webhook(secret).verify(body, headers)
            verified = True
        except WebhookVerificationError as error:
            event, verified = None, False
            sys.stderr.write(f"verification failed: {error}\n")
        status = answer.get("status", 204) if verified else 400
        append("requests.jsonl", {"id": headers.get("webhook-id"), "status": status, "verified": verified})
        time.sleep(answer.get("delay", 0))
        if verified and 200 <= status < 300:
            append("events.jsonl", {"id": headers.get("webhook-id"), "event": event})
        self.send_response(status)
        if "location" in answer:
            self.send_header("location", answer["location"])
        if "retry_after" in answer:
            self.send_header("retry-after", str(answer["retry_after"]))
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self):
        append("requests.jsonl", {"id": None, "status": 404, "verified": False, "get": self.path})
        self.send_response(404)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
with open(path("port.tmp"), "w") as f:
    f.write(str(server.server_address[1]))
os.replace(path("port.tmp"), path("port"))
server.serve_forever()
