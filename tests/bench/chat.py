#!/usr/bin/env python3
"""Benchmark of POST /chat end to end (issue 6). Prints figures; asserts nothing.

Starts the instant chat-completions server (`actors/examples/instant_model.rs`) and the release
gateway pointed at it (temporary --home, admin token, provider model `bench`), then:

- wrk -t1 -c1  POST /chat, one session, 10 s                     -> turns/s, p50/p99
- wrk -t1 -c32 POST /chat, 32 sessions (ids round-robin), 10 s   -> turns/s, p50/p99
- wrk against the model server directly with the same concurrency -> its p50/p99
- overhead per turn ~ turn p50/p99 - model p50/p99 (goal: p99 <= 5 ms)
- the model server's own service time during each /chat run (GET /stats).

Before the measured runs a 3 s warm-up at 32 sessions (and one at 1 session) fills each
session's history to its bound (model.history_messages, default 40), so measured turns carry
a full history to the model, as a long conversation does.

Usage: tests/bench/chat.py [path/to/kafclaw] [path/to/instant_model]
       (defaults: $CARGO_TARGET_DIR or target, /release/kafclaw and /release/examples/instant_model;
       build them with `cargo build --release && cargo build --release -p kafclaw-actors --example instant_model`)
Env: BENCH_SECONDS (10). Needs wrk (Debian package `wrk`).
"""
import json, os, re, shutil, subprocess, sys, tempfile, urllib.request

TARGET = os.environ.get("CARGO_TARGET_DIR", "target")
BIN = sys.argv[1] if len(sys.argv) > 1 else f"{TARGET}/release/kafclaw"
MODEL = sys.argv[2] if len(sys.argv) > 2 else f"{TARGET}/release/examples/instant_model"
TOKEN = "kc_bench-token-0123456789abcdefghijklmnopqrstuvwxyz"
DURATION = os.environ.get("BENCH_SECONDS", "10")

# wrk script: POST /chat with the admin token; the session id cycles through SESSIONS ids, one
# per request, so with SESSIONS connections each connection keeps (almost always) its own
# session in flight. SESSIONS and MESSAGE_TAG come from the environment.
LUA = r"""
local sessions = tonumber(os.getenv("SESSIONS"))
local tag = os.getenv("MESSAGE_TAG")
local token = os.getenv("TOKEN")
local n = 0
function request()
  local id = n % sessions
  n = n + 1
  local body = string.format('{"message":"benchmark message %d","session":"%s-%d"}', n, tag, id)
  return wrk.format("POST", nil, {["Authorization"] = "Bearer " .. token,
                                  ["Content-Type"] = "application/json"}, body)
end
"""

# A chat-completions request body of the size the gateway sends with a full history
# (system prompt + 40 messages + the new one), for measuring the model server directly.
MODEL_LUA = r"""
local messages = {'{"role":"system","content":"You are a helpful assistant."}'}
for i = 1, 40 do
  local role = (i % 2 == 1) and "user" or "assistant"
  messages[#messages + 1] = string.format('{"role":"%s","content":"benchmark message %d"}', role, i)
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.body = '{"model":"bench","messages":[' .. table.concat(messages, ",") .. ']}'
"""


def to_ms(value):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", value)
    number, unit = float(m.group(1)), m.group(2)
    return number * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(url, connections, script, env_extra=None, seconds=DURATION):
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        path = f.name
    env = dict(os.environ, TOKEN=TOKEN, **(env_extra or {}))
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", path, url]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env).stdout
    os.unlink(path)
    try:
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
        p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    except AttributeError:
        sys.exit(f"cannot parse wrk output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50": p50, "p99": p99,
            "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "errors": errors.group(1) if errors else "none"}


def cpu_seconds(pid):
    """User + system CPU seconds a live process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def model_stats(base, reset=True):
    with urllib.request.urlopen(f"{base}/stats{'?reset' if reset else ''}", timeout=5) as r:
        return json.load(r)


def chat_once(gw, session):
    request = urllib.request.Request(
        f"http://{gw}/chat", method="POST",
        data=json.dumps({"message": "hello", "session": session}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.load(r)


def main():
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    for path in (BIN, MODEL):
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: cargo build --release && "
                     "cargo build --release -p kafclaw-actors --example instant_model")
    model = subprocess.Popen([MODEL, "0"], stdout=subprocess.PIPE, text=True)
    line = model.stdout.readline()
    m = re.match(r"listening (http://\S+)/v1", line)
    if not m:
        model.kill()
        sys.exit(f"instant_model: no listening line: {line!r}")
    model_base = m.group(1)

    home = tempfile.mkdtemp()
    # A file, not a pipe: a full pipe would block the gateway's logging mid-run.
    stderr_file = tempfile.TemporaryFile("w+")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "KAFCLAW_LOG_LEVEL": "warn",
           "KAFCLAW_GATEWAY_AUTH_TOKEN": TOKEN,
           "KAFCLAW_PROVIDERS_OPENAI_API_BASE": f"{model_base}/v1",
           "KAFCLAW_PROVIDERS_OPENAI_MODEL": "bench"}
    gateway = subprocess.Popen([BIN, "--home", home, "gateway", "--port", "0", "--dashboard-port", "0"],
                               stdout=subprocess.PIPE, stderr=stderr_file, env=env, text=True)
    line = gateway.stdout.readline()
    m = re.match(r"ready gateway=(\S+) dashboard=(\S+)", line)
    if not m:
        gateway.kill(); model.kill()
        stderr_file.seek(0)
        sys.exit(f"gateway: no ready line: {line!r}\n{stderr_file.read()}")
    gw = m.group(1)
    try:
        first = chat_once(gw, "smoke")
        if first.get("reply") != "ok":
            sys.exit(f"unexpected /chat reply: {first}")
        url = f"http://{gw}/chat"
        results = {}
        for label, sessions in (("1 session", 1), ("32 sessions", 32)):
            tag = f"s{sessions}"
            wrk(url, sessions, LUA, {"SESSIONS": str(sessions), "MESSAGE_TAG": tag}, seconds=3)
            model_stats(model_base)  # reset: only the measured run below counts
            cpu = cpu_seconds(gateway.pid)
            turn = wrk(url, sessions, LUA, {"SESSIONS": str(sessions), "MESSAGE_TAG": tag})
            turn["cpu"] = cpu_seconds(gateway.pid) - cpu
            inside = model_stats(model_base)
            direct = wrk(f"{model_base}/v1/chat/completions", sessions, MODEL_LUA)
            results[label] = (turn, inside, direct)
    finally:
        gateway.terminate()
        try:
            gateway.wait(timeout=15)
        except subprocess.TimeoutExpired:
            gateway.kill()
        stderr_file.seek(0)
        stderr = stderr_file.read()
        stderr_file.close()
        model.terminate(); model.wait()
        shutil.rmtree(home, ignore_errors=True)

    print(f"binary: {BIN}   model server: {MODEL}   cores: {os.cpu_count()}   {DURATION} s per run")
    for label, (turn, inside, direct) in results.items():
        print(f"POST /chat, {label:<12} {turn['rps']:>8,.0f} turns/s   p50 {turn['p50']:.2f} ms   "
              f"p99 {turn['p99']:.2f} ms   (non-2xx {turn['non2xx']}, socket errors {turn['errors']})")
        turns = turn["rps"] * float(DURATION)
        print(f"  gateway CPU during the run: {turn['cpu']:.1f} s ({turn['cpu'] / float(DURATION):.2f} cores), "
              f"{turn['cpu'] / turns * 1000:.3f} ms per turn")
        print(f"  model direct (wrk, same concurrency): {direct['rps']:>8,.0f} req/s   "
              f"p50 {direct['p50']:.2f} ms   p99 {direct['p99']:.2f} ms   (non-2xx {direct['non2xx']})")
        print(f"  model service time during the /chat run: {inside['requests']} requests   "
              f"p50 {inside['p50_us'] / 1000:.3f} ms   p99 {inside['p99_us'] / 1000:.3f} ms")
        print(f"  gateway overhead per turn ~ p50 {turn['p50'] - direct['p50']:.2f} ms   "
              f"p99 {turn['p99'] - direct['p99']:.2f} ms   (goal: p99 <= 5 ms)")
    warnings = [l for l in stderr.splitlines() if l.strip()]
    if warnings:
        print(f"gateway stderr: {len(warnings)} lines, last: {warnings[-1][:200]}")
        if os.environ.get("BENCH_SHOW_STDERR"):
            print("\n".join(warnings))


if __name__ == "__main__":
    main()
