#!/usr/bin/env python3
"""A tiny KafClaw bridge: a console chat, in Python 3 standard library only.

Inbound (you -> KafClaw): every line typed on stdin is POSTed, signed, to
    {gateway}/webhooks/bridge/{name}
Outbound (KafClaw -> you): an HTTP server on --listen receives the gateway's signed replies
(configure it as channels.bridges.<name>.outbound_url), verifies signature, timestamp and
replay, and prints them.

    KAFCLAW_BRIDGE_SECRET=... python3 bridge.py --gateway http://127.0.0.1:18790 \
        --name console --listen 127.0.0.1:18800 --sender alice

Console commands besides plain lines:
    /file PATH [text]   send PATH as an attachment (inline base64 up to 1 MiB, else served
                        from this bridge's own host, the origin of its outbound_url)
    /re N text          send text as a reply to your N-th message (reply_to)

See README.md for the protocol and for adapting this to Slack or Teams.
"""

import argparse
import base64
import mimetypes
import secrets as token_source
import hashlib
import hmac
import http.server
import itertools
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request

WINDOW_SECONDS = 300  # accepted clock skew, both directions
MAX_BODY_BYTES = 1024 * 1024
# How long a reply's Idempotency-Key is remembered. KafClaw repeats a reply whose answer it
# lost (a crash) after its resend wait (default 30 s) and retries failures for up to hours:
# a day covers both. Persist the keys (a file, your database) if your bridge restarts.
IDEMPOTENCY_SECONDS = 24 * 3600
# Attachments up to this size go inline (base64); larger ones are served from our own host.
MAX_INLINE_BYTES = 1024 * 1024
SERVED = {}  # url path -> (mime type, bytes): files offered to the gateway by URL


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The X-KafClaw-Signature value: v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def encode(message: dict) -> bytes:
    """The exact bytes that are signed and sent (compact JSON, UTF-8)."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class ReplayGuard:
    """Remembers accepted signatures until their timestamp leaves the window."""

    def __init__(self, window: int = WINDOW_SECONDS):
        self.window = window
        self.seen = {}  # signature -> timestamp
        self.lock = threading.Lock()

    def check(self, secret: bytes, timestamp, signature, body: bytes, now=None):
        """Returns None when the delivery is authentic and new, else the reason (str)."""
        now = int(time.time()) if now is None else now
        if not timestamp or not timestamp.isdigit() or len(timestamp) > 12:
            return "bad timestamp"
        if abs(now - int(timestamp)) > self.window:
            return "timestamp outside the window"
        if not signature or not signature.startswith("v1="):
            return "bad signature header"
        expected = sign(secret, timestamp, body)
        if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
            return "signature does not match"
        with self.lock:
            for sig, ts in list(self.seen.items()):
                if ts < now - self.window:
                    del self.seen[sig]
            if expected in self.seen:
                return "replayed"
            self.seen[expected] = int(timestamp)
        return None


class Delivered:
    """Idempotency-Keys of replies already delivered, remembered for IDEMPOTENCY_SECONDS."""

    def __init__(self, keep: int = IDEMPOTENCY_SECONDS):
        self.keep = keep
        self.seen = {}  # key -> when first delivered
        self.lock = threading.Lock()

    def first_time(self, key: str, now=None) -> bool:
        """True once per key: deliver the reply; False for a repeat: answer 200, do nothing."""
        now = time.time() if now is None else now
        with self.lock:
            for old, at in list(self.seen.items()):
                if at < now - self.keep:
                    del self.seen[old]
            if key in self.seen:
                return False
            self.seen[key] = now
            return True


class Outbound(http.server.BaseHTTPRequestHandler):
    """Receives KafClaw's replies: POST with the signed JSON
    {"message_id","chat_id","text","reply_to"?} and the header Idempotency-Key."""

    secret = b""
    guard = ReplayGuard()
    delivered = Delivered()  # the gateway may repeat a reply after a crash: same key
    on_reply = None  # callable(dict), replaceable when adapting

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            return self.answer(413, "too large")
        body = self.rfile.read(length)
        problem = self.guard.check(
            self.secret,
            self.headers.get("X-KafClaw-Timestamp"),
            self.headers.get("X-KafClaw-Signature"),
            body,
        )
        if problem:
            # 401 is terminal for KafClaw (never retried): use it only for forgeries.
            return self.answer(401, problem)
        try:
            reply = json.loads(body)
            chat_id, text = reply["chat_id"], reply["text"]
        except (ValueError, KeyError, TypeError):
            return self.answer(400, "bad body")
        # Idempotency-Key (= message_id) is the same on every attempt at one reply.
        key = self.headers.get("Idempotency-Key") or reply.get("message_id")
        if not key or self.delivered.first_time(key):
            (self.on_reply or show)(reply)
        # 2xx = delivered. Answer 429/5xx (optionally with Retry-After: <seconds>) to have the
        # gateway retry later; any other 4xx is recorded as a terminal failure.
        return self.answer(200, "ok")

    def do_GET(self):
        # The gateway fetches URL attachments only from this bridge's own origin (the one of
        # outbound_url); serve exactly the files offered, nothing else.
        served = SERVED.get(self.path)
        if served is None:
            return self.answer(404, "not found")
        mime, data = served
        self.send_response(200)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def answer(self, status: int, text: str):
        data = json.dumps({"status": text}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # quiet: replies are printed by show()
        pass


def show(reply: dict):
    context = f" (re {reply['reply_to']})" if reply.get("reply_to") else ""
    print(f"\n[kafclaw -> {reply['chat_id']}]{context} {reply['text']}\n> ", end="", flush=True)


def post_inbound(url: str, secret: bytes, message: dict, now=None):
    """Signs and POSTs one inbound message; returns (status, body text)."""
    body = encode(message)
    timestamp = str(int(time.time()) if now is None else now)
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-KafClaw-Timestamp": timestamp,
            "X-KafClaw-Signature": sign(secret, timestamp, body),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")


def attachment(path: str, listen: str) -> dict:
    """The attachments[] entry for a file: inline base64 when small, else a URL on our host."""
    with open(path, "rb") as f:
        data = f.read()
    mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
    entry = {"name": os.path.basename(path), "mime_type": mime, "size": len(data)}
    if len(data) <= MAX_INLINE_BYTES:
        entry["data"] = base64.b64encode(data).decode("ascii")
    else:
        url_path = f"/files/{token_source.token_urlsafe(16)}"
        SERVED[url_path] = (mime, data)
        entry["url"] = f"http://{listen}{url_path}"
    return entry


def compose(line: str, sent: list, listen: str) -> dict:
    """The fields of one message typed on the console (see the module help)."""
    if line.startswith("/file "):
        path, _, text = line[len("/file "):].strip().partition(" ")
        return {"text": text, "attachments": [attachment(path, listen)]}
    if line.startswith("/re "):
        n, _, text = line[len("/re "):].partition(" ")
        fields = {"text": text}
        if n.isdigit() and 0 < int(n) <= len(sent):
            fields["reply_to"] = sent[int(n) - 1]
        return fields
    return {"text": line}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway", default="http://127.0.0.1:18790")
    parser.add_argument("--name", default="console", help="the bridge's name in channels.bridges")
    parser.add_argument("--listen", default="127.0.0.1:18800", help="host:port for replies")
    parser.add_argument("--sender", default=os.environ.get("USER", "console-user"))
    parser.add_argument("--chat", default="console", help="chat_id of this conversation")
    args = parser.parse_args()

    secret = os.environ.get("KAFCLAW_BRIDGE_SECRET", "").encode()
    if not secret:
        sys.exit("set KAFCLAW_BRIDGE_SECRET to the bridge's secret (channels.bridges.<name>.secret)")

    host, port = args.listen.rsplit(":", 1)
    Outbound.secret = secret
    server = http.server.ThreadingHTTPServer((host, int(port)), Outbound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"replies: configure outbound_url = http://{args.listen}/  (listening)")

    url = f"{args.gateway.rstrip('/')}/webhooks/bridge/{args.name}"
    counter = itertools.count(1)
    sent = []  # our message ids, for /re
    run = f"{int(time.time())}"
    print(f"inbound: {url}\ntype a message and press enter (Ctrl-D to quit)")
    for line in iter(lambda: input("> "), None):
        if not line.strip():
            continue
        try:
            fields = compose(line, sent, args.listen)
        except OSError as error:
            print(f"cannot attach: {error}")
            continue
        message = {
            "message_id": f"console-{run}-{next(counter)}",  # unique: the gateway de-duplicates
            "sender_id": args.sender,
            "chat_id": args.chat,
            **fields,
        }
        sent.append(message["message_id"])
        status, text = post_inbound(url, secret, message)
        if status != 200:
            print(f"gateway answered {status}: {text}")


if __name__ == "__main__":
    try:
        main()
    except (EOFError, KeyboardInterrupt):
        print()
