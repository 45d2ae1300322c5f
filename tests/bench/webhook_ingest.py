#!/usr/bin/env python3
"""Signed WhatsApp webhook ingest, end to end, with turns running behind it (issue 12).
Prints figures; asserts nothing.

For each gateway binary given (e.g. the build before a change and the one after, to compare on
the same machine in the same run): a temporary --home, WhatsApp enabled with the load's sender
as an owner (so every message is admitted, claimed, handed to the agent and answered: with the
turn journal on, each turn journals and syncs its steps and its reply's send attempt), the
instant model server (`--example instant_model`) as the provider and as the Graph API, then
`--example webhook_load` against `/webhooks/whatsapp` for BENCH_SECONDS with BENCH_CONNECTIONS
connections: accepted messages/s and p50/p99 of the 200s.

Usage: tests/bench/webhook_ingest.py [kafclaw binary …]
       (default: $CARGO_TARGET_DIR or target, /release/kafclaw; build with
       `cargo build --release && cargo build --release -p kafclaw-actors --example webhook_load
       --example instant_model`)
Env: BENCH_SECONDS (10), BENCH_CONNECTIONS (32).
"""
import json, os, re, subprocess, sys, tempfile, time, urllib.request

TARGET = os.environ.get("CARGO_TARGET_DIR", "target")
BINS = sys.argv[1:] or [f"{TARGET}/release/kafclaw"]
LOAD = f"{TARGET}/release/examples/webhook_load"
MODEL = f"{TARGET}/release/examples/instant_model"
SECONDS = os.environ.get("BENCH_SECONDS", "10")
CONNECTIONS = os.environ.get("BENCH_CONNECTIONS", "32")
SECRET = "bench-app-secret"
OWNER = "15550000001"
PNID = "109876543210"


def start_model():
    model = subprocess.Popen([MODEL, "0"], stdout=subprocess.PIPE, text=True)
    line = model.stdout.readline().strip()
    base = line.split()[-1]  # http://127.0.0.1:PORT/v1
    return model, base


def model_posts(base, reset=False):
    """POSTs the instant server answered (model calls and Graph sends) since the last reset."""
    url = base[: -len("/v1")] + "/stats" + ("?reset" if reset else "")
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)["requests"]


def start_gateway(binary, base, extra_env=None):
    """Starts `binary` with WhatsApp on the instant server; returns (process, gateway address).
    The process also carries `.home` and `.dashboard` (the dashboard listener's address)."""
    home = tempfile.mkdtemp(prefix="kafclaw-ingest-")
    os.makedirs(f"{home}/.kafclaw", mode=0o700)
    config = {
        "channels": {
            "whatsapp": {
                "enabled": True,
                "phone_number_id": PNID,
                "graph_base": base[: -len("/v1")],
                "owner_ids": [OWNER],
            }
        }
    }
    with open(f"{home}/.kafclaw/config.json", "w") as f:
        json.dump(config, f)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "KAFCLAW_PROVIDERS_OPENAI_API_BASE": base,
        "KAFCLAW_PROVIDERS_OPENAI_MODEL": "bench",
        "KAFCLAW_CHANNELS_WHATSAPP_APP_SECRET": SECRET,
        "KAFCLAW_CHANNELS_WHATSAPP_VERIFY_TOKEN": "bench-verify",
        "KAFCLAW_CHANNELS_WHATSAPP_ACCESS_TOKEN": "bench-graph-token",
        "KAFCLAW_LOG_LEVEL": "error",
    }
    env.update(extra_env or {})
    gateway = subprocess.Popen(
        [binary, "--home", home, "gateway", "--port", "0", "--dashboard-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    ready = gateway.stdout.readline()
    match = re.search(r"gateway=(\S+)", ready)
    if not match:
        gateway.kill()
        sys.exit(f"{binary}: no ready line ({ready!r})")
    dashboard = re.search(r"dashboard=(\S+)", ready)
    gateway.home = home
    gateway.dashboard = dashboard.group(1) if dashboard else None
    return gateway, match.group(1)


def main():
    model, base = start_model()
    try:
        for binary in BINS:
            gateway, addr = start_gateway(binary, base)
            try:
                time.sleep(0.5)
                model_posts(base, reset=True)
                out = subprocess.run(
                    [
                        LOAD,
                        "--url", f"http://{addr}/webhooks/whatsapp",
                        "--connections", CONNECTIONS,
                        "--duration", SECONDS,
                        "--app-secret", SECRET,
                        "--from", OWNER,
                        "--phone-number-id", PNID,
                    ],
                    capture_output=True,
                    text=True,
                )
                posts = model_posts(base, reset=True)
                print(f"== {binary}")
                print(out.stdout.strip())
                print(f"turns behind it: {posts} model calls + Graph sends answered during the run")
                if out.returncode != 0:
                    print(out.stderr.strip())
            finally:
                gateway.kill()
                gateway.wait()
    finally:
        model.kill()


if __name__ == "__main__":
    main()
