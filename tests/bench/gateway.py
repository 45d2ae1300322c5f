#!/usr/bin/env python3
"""Benchmark of the foundation (issue 2). Prints figures; asserts nothing.

- idle RSS of the gateway process 1 s after its ready line;
- time from exec to the first GET /healthz 200 (median of 10 starts);
- wrk -t1 -c32 -d10s: unauthenticated /healthz, authenticated GET /api/v1/status,
  and GET /api/v1/status with a bad token (401), each ratio against /healthz.

Usage: tests/bench/gateway.py [path/to/kafclaw]   (default: target/release/kafclaw)
Needs wrk (Debian package `wrk`).
"""
import os, re, shutil, socket, statistics, subprocess, sys, tempfile, time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/kafclaw"
TOKEN = "kc_bench-token-0123456789abcdefghijklmnopqrstuvwxyz"
DURATION = os.environ.get("BENCH_SECONDS", "10")


def start(home, env_extra=None):
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "KAFCLAW_LOG_LEVEL": "warn"}
    env.update(env_extra or {})
    t0 = time.perf_counter()
    p = subprocess.Popen([BIN, "--home", home, "gateway", "--port", "0", "--dashboard-port", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    line = p.stdout.readline()
    m = re.match(r"ready gateway=(\S+) dashboard=(\S+)", line)
    if not m:
        p.kill()
        sys.exit(f"no ready line: {line!r}")
    return p, t0, m.group(1), m.group(2)


def healthz_once(addr):
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2) as s:
        # The listener's own address: any other Host is refused with 421 (DNS rebinding).
        s.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        return s.recv(64).startswith(b"HTTP/1.1 200")


def time_to_first_healthz():
    samples = []
    for _ in range(10):
        home = tempfile.mkdtemp()
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "KAFCLAW_LOG_LEVEL": "warn"}
        # Fixed free ports so the poller can start before the ready line is read.
        ports = []
        for _ in range(2):
            s = socket.socket(); s.bind(("127.0.0.1", 0)); ports.append(s.getsockname()[1]); s.close()
        t0 = time.perf_counter()
        p = subprocess.Popen([BIN, "--home", home, "gateway", "--port", str(ports[0]),
                              "--dashboard-port", str(ports[1])],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        while True:
            try:
                if healthz_once(f"127.0.0.1:{ports[1]}"):
                    break
            except OSError:
                pass
            if time.perf_counter() - t0 > 10:
                sys.exit("gateway did not answer within 10 s")
        samples.append((time.perf_counter() - t0) * 1000)
        p.terminate(); p.wait()
        shutil.rmtree(home, ignore_errors=True)
    return statistics.median(samples), min(samples)


def wrk(url, header=None):
    cmd = ["wrk", "-t1", "-c32", f"-d{DURATION}s"]
    if header:
        cmd += ["-H", header]
    out = subprocess.run(cmd + [url], capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, int(non2xx.group(1)) if non2xx else 0


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def main():
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    median_ms, best_ms = time_to_first_healthz()
    home = tempfile.mkdtemp()
    p, _, gw, dash = start(home, {"KAFCLAW_GATEWAY_AUTH_TOKEN": TOKEN})
    time.sleep(1)
    rss = rss_kib(p.pid)
    threads = len(os.listdir(f"/proc/{p.pid}/task"))
    health, _ = wrk(f"http://{dash}/healthz")
    authed, authed_bad = wrk(f"http://{dash}/api/v1/status", f"Authorization: Bearer {TOKEN}")
    rejected, rejected_n = wrk(f"http://{dash}/api/v1/status", "Authorization: Bearer wrong-token")
    rss_after = rss_kib(p.pid)
    p.terminate(); p.wait()
    shutil.rmtree(home, ignore_errors=True)
    print(f"binary: {BIN}  threads idle: {threads}")
    print(f"idle RSS after start:          {rss / 1024:.1f} MiB   (goal <= 10 MiB)")
    print(f"RSS after the load runs:       {rss_after / 1024:.1f} MiB")
    print(f"exec -> first /healthz 200:    median {median_ms:.1f} ms, best {best_ms:.1f} ms   (goal <= 10 ms)")
    print(f"/healthz (no auth):            {health:,.0f} req/s")
    print(f"/api/v1/status (admin token):  {authed:,.0f} req/s   ratio {authed / health:.2f}   (goal >= 0.8; non-2xx {authed_bad})")
    print(f"/api/v1/status (bad token):    {rejected:,.0f} req/s   ratio {rejected / health:.2f}   (goal >= 0.7; 401s {rejected_n})")


if __name__ == "__main__":
    main()
