#!/usr/bin/env python3
"""Benchmark of legitimate throughput during an auth-failure storm (issue 7). Prints figures;
asserts nothing.

Starts the release gateway on loopback (temporary --home, admin token set, ports 0) and runs
`actors/examples/auth_storm.rs` against GET /api/v1/status on the dashboard port: phase 1 the
legitimate, authenticated load from 127.0.0.2 alone; phase 2 the same load while connections
from 127.0.0.1 send a wrong token as fast as they can (locked out with 429 after 10 failures).
Also triggers incidents.auth_failures_per_ip / _global: expected.

Usage: tests/bench/auth_storm.py [path/to/kafclaw] [path/to/auth_storm]
       (defaults: $CARGO_TARGET_DIR or target, /release/kafclaw and /release/examples/auth_storm;
       build them with `cargo build --release && cargo build --release -p kafclaw-actors --example auth_storm`)
Env: BENCH_SECONDS (10 per phase), BENCH_CONNECTIONS (16 legitimate), BENCH_STORM_CONNECTIONS (16).
"""
import os, re, resource, shutil, subprocess, sys, tempfile, time

TARGET = os.environ.get("CARGO_TARGET_DIR", "target")
BIN = sys.argv[1] if len(sys.argv) > 1 else f"{TARGET}/release/kafclaw"
LOAD = sys.argv[2] if len(sys.argv) > 2 else f"{TARGET}/release/examples/auth_storm"
TOKEN = "kc_bench-token-0123456789abcdefghijklmnopqrstuvwxyz"
DURATION = os.environ.get("BENCH_SECONDS", "10")
CONNECTIONS = os.environ.get("BENCH_CONNECTIONS", "16")
STORM_CONNECTIONS = os.environ.get("BENCH_STORM_CONNECTIONS", "16")


def cpu_seconds(pid):
    """User + system CPU seconds a live process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    for path in (BIN, LOAD):
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: cargo build --release && "
                     "cargo build --release -p kafclaw-actors --example auth_storm")
    home = tempfile.mkdtemp()
    stderr_file = tempfile.TemporaryFile("w+")  # not a pipe: a full pipe would block logging
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "KAFCLAW_LOG_LEVEL": "warn",
           "KAFCLAW_GATEWAY_HOST": "127.0.0.1", "KAFCLAW_GATEWAY_AUTH_TOKEN": TOKEN}
    gateway = subprocess.Popen([BIN, "--home", home, "gateway", "--port", "0", "--dashboard-port", "0"],
                               stdout=subprocess.PIPE, stderr=stderr_file, env=env, text=True)
    line = gateway.stdout.readline()
    m = re.match(r"ready gateway=(\S+) dashboard=(\S+)", line)
    if not m:
        gateway.kill()
        stderr_file.seek(0)
        sys.exit(f"gateway: no ready line: {line!r}\n{stderr_file.read()}")
    dashboard = m.group(2)
    try:
        time.sleep(0.5)
        cmd = [LOAD, "--url", f"http://{dashboard}/api/v1/status",
               "--connections", CONNECTIONS, "--storm-connections", STORM_CONNECTIONS,
               "--duration", DURATION, "--legit-ip", "127.0.0.2", "--storm-ip", "127.0.0.1"]
        print(f"binary: {BIN}   cores: {os.cpu_count()}")
        sys.stdout.flush()
        gateway_cpu = cpu_seconds(gateway.pid)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        subprocess.run(cmd, env=dict(os.environ, KAFCLAW_GATEWAY_AUTH_TOKEN=TOKEN))
        wall = time.monotonic() - started
        gateway_cpu = cpu_seconds(gateway.pid) - gateway_cpu
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        load_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
        print(f"CPU over both phases ({wall:.1f} s wall, {os.cpu_count()} cores): gateway {gateway_cpu:.1f} s "
              f"({gateway_cpu / wall:.2f} cores), load generator {load_cpu:.1f} s ({load_cpu / wall:.2f} cores)")
    finally:
        gateway.terminate()
        try:
            gateway.wait(timeout=15)
        except subprocess.TimeoutExpired:
            gateway.kill()
        stderr_file.seek(0)
        lines = [l for l in stderr_file.read().splitlines() if l.strip()]
        shutil.rmtree(home, ignore_errors=True)
    if lines:
        print(f"gateway stderr: {len(lines)} lines; first: {lines[0][:240]}")
        if len(lines) > 1:
            print(f"                           last: {lines[-1][:240]}")


if __name__ == "__main__":
    main()
