#!/usr/bin/env python3
"""Fleet lockdown fan-out (issue 18): how long until a lockdown sent to one node holds on
every node? Prints figures; asserts nothing.

Set-up: a 3-server NATS JetStream cluster on loopback (Debian's `nats-server`, config files
and stores in a temporary directory, as tests/it/fleet/cluster.rs does), three gateways
(`a`, `b`, `c`) with `fleet.enabled`, `fleet.stream_replicas = 3` and one bridge channel.
Each trial: `POST /api/v1/admin/control {"type":"lockdown"}` to one node (round robin),
then poll the two other nodes (`GET /api/v1/channels` and `/api/v1/tools`, every 2 ms)
until each shows the channel quarantined and tools at tier 0; the time from sending the
request to the last node holding it is the trial's fan-out. Then `relax_tools` and
`release_channel` (also fanned out) undo it, and the next trial waits until every node is
open again. Printed: p50 / p90 / p99 / max over --trials (100), and, as the baseline from
the same run, the same node's own answer time (the lockdown applied locally: the request's
round trip).

Goal (issue 18): p99 <= 1 s.

Usage: tests/bench/fleet_lockdown.py [--trials 100] [kafclaw binary]
       (default binary: target/release/kafclaw; needs `nats-server` on PATH)
"""
import argparse, http.client, json, os, re, shutil, socket, statistics, subprocess, sys
import tempfile, time

TOKEN = "kc_bench-token-0123456789abcdefghijklmnopqrstuvwxyz"
BRIDGE_SECRET = "fleet-bridge-secret-0123456789"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http_json(addr, method, path, body=None, timeout=10):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    headers = {"Authorization": f"Bearer {TOKEN}", "Host": addr}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    res = conn.getresponse()
    raw = res.read()
    conn.close()
    try:
        return res.status, json.loads(raw or b"null")
    except ValueError:
        return res.status, None


def start_cluster(base):
    ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
    procs = []
    for i, (client, monitor, route) in enumerate(ports):
        name = f"n{i + 1}"
        store = os.path.join(base, name)
        os.makedirs(store)
        routes = ", ".join(f'"nats-route://127.0.0.1:{r}"'
                           for j, (_, _, r) in enumerate(ports) if j != i)
        conf = os.path.join(base, f"{name}.conf")
        with open(conf, "w") as f:
            f.write(f'server_name: {name}\nlisten: "127.0.0.1:{client}"\nhttp: "127.0.0.1:{monitor}"\n'
                    f'jetstream {{\n  store_dir: "{store}"\n  max_memory_store: 64MB\n'
                    f'  max_file_store: 256MB\n}}\n'
                    f'cluster {{\n  name: kafclaw-bench\n  listen: "127.0.0.1:{route}"\n'
                    f'  routes: [{routes}]\n}}\n')
        procs.append(subprocess.Popen(["nats-server", "-c", conf], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            leaders = []
            for (_, monitor, _) in ports:
                conn = http.client.HTTPConnection("127.0.0.1", monitor, timeout=2)
                conn.request("GET", "/jsz")
                jsz = json.loads(conn.getresponse().read())
                conn.close()
                leaders.append((jsz.get("meta_cluster") or {}).get("leader"))
            if all(leaders):
                return procs, ",".join(f"nats://127.0.0.1:{c}" for (c, _, _) in ports)
        except (OSError, ValueError, http.client.HTTPException):
            pass
        time.sleep(0.1)
    for p in procs:
        p.kill()
    sys.exit("the NATS cluster was not ready within 30 s")


def start_node(binary, base, node_id, urls):
    home = os.path.join(base, f"home-{node_id}")
    os.makedirs(os.path.join(home, ".kafclaw"), mode=0o700)
    with open(os.path.join(home, ".kafclaw", "config.json"), "w") as f:
        json.dump({"channels": {"bridges": {"slack": {"outbound_url": "http://127.0.0.1:9/out"}}}}, f)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "KAFCLAW_LOG_LEVEL": "warn",
        "KAFCLAW_GATEWAY_AUTH_TOKEN": TOKEN,
        "KAFCLAW_FLEET_ENABLED": "true",
        "KAFCLAW_FLEET_NATS_URLS": urls,
        "KAFCLAW_FLEET_NODE_ID": node_id,
        "KAFCLAW_FLEET_STREAM_REPLICAS": "3",
        "KAFCLAW_CHANNELS_BRIDGES_SLACK_SECRET": BRIDGE_SECRET,
    }
    p = subprocess.Popen([binary, "--home", home, "gateway", "--port", "0", "--dashboard-port", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    line = p.stdout.readline()
    m = re.match(r"ready gateway=(\S+) dashboard=(\S+)", line)
    if not m:
        p.kill()
        sys.exit(f"node {node_id}: no ready line: {line!r}")
    return p, m.group(2)


def locked(addr):
    _, channels = http_json(addr, "GET", "/api/v1/channels")
    quarantined = any(c.get("name") == "slack" and c.get("state") == "quarantined"
                      for c in (channels or []))
    _, tools = http_json(addr, "GET", "/api/v1/tools")
    return quarantined and ((tools or {}).get("restriction") or {}).get("max_tier") == 0


def wait_all(addrs, want, deadline_s=10.0):
    """Seconds until every address shows `want` (locked or open); None past the deadline."""
    start = time.perf_counter()
    pending = list(addrs)
    while pending:
        pending = [a for a in pending if locked(a) != want]
        if not pending:
            break
        if time.perf_counter() - start > deadline_s:
            return None
        time.sleep(0.002)
    return time.perf_counter() - start


def pct(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("binary", nargs="?", default="target/release/kafclaw")
    args = ap.parse_args()
    if not shutil.which("nats-server"):
        sys.exit("needs nats-server (apt-get install nats-server)")
    base = tempfile.mkdtemp(prefix="kafclaw-fleet-bench-")
    cluster, urls = start_cluster(base)
    nodes = []
    try:
        for node_id in ["a", "b", "c"]:
            nodes.append(start_node(args.binary, base, node_id, urls))
        dashboards = [d for (_, d) in nodes]
        deadline = time.time() + 20
        while time.time() < deadline:
            states = [((http_json(d, "GET", "/healthz")[1] or {}).get("fleet") or {}).get("state")
                      for d in dashboards]
            if all(s == "connected" for s in states):
                break
            time.sleep(0.05)
        else:
            sys.exit(f"nodes did not connect: {states}")
        fan_out, local, lost = [], [], 0
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        for trial in range(args.trials):
            origin = dashboards[trial % 3]
            others = [d for d in dashboards if d != origin]
            t0 = time.perf_counter()
            status, body = http_json(origin, "POST", "/api/v1/admin/control",
                                     {"type": "lockdown", "reason": f"bench {trial}"})
            local.append(time.perf_counter() - t0)
            if status != 200:
                sys.exit(f"lockdown refused: {status} {body}")
            waited = wait_all(others, True)
            if waited is None:
                lost += 1
            else:
                fan_out.append(time.perf_counter() - t0)
            for message in [{"type": "relax_tools"},
                            {"type": "release_channel", "channel": "slack", "stage": "full"}]:
                status, body = http_json(origin, "POST", "/api/v1/admin/control", message)
                if status != 200:
                    sys.exit(f"{message['type']} refused: {status} {body}")
            if wait_all(dashboards, False) is None:
                sys.exit("the fleet did not open again within 10 s")
        ms = lambda s: f"{s * 1000:.1f} ms"
        print(f"fleet lockdown fan-out: 3 gateways, 3 NATS servers (R3), {args.trials} trials, "
              f"load {load} at start, binary {args.binary}")
        print("| figure | p50 | p90 | p99 | max |")
        print("|---|---|---|---|---|")
        if fan_out:
            print(f"| lockdown held on every node | {ms(pct(fan_out, .5))} | {ms(pct(fan_out, .9))} "
                  f"| {ms(pct(fan_out, .99))} | {ms(max(fan_out))} |")
        print(f"| baseline: the origin's own answer | {ms(pct(local, .5))} | {ms(pct(local, .9))} "
              f"| {ms(pct(local, .99))} | {ms(max(local))} |")
        if lost:
            print(f"trials not held everywhere within 10 s: {lost}")
        p99 = pct(fan_out, .99) if fan_out else float("inf")
        print(f"goal p99 <= 1 s: {'met' if p99 <= 1.0 and not lost else 'NOT met'} "
              f"(p99 {ms(p99) if fan_out else 'n/a'}; polling adds up to ~2 ms plus two HTTP "
              f"reads per node)")
    finally:
        for (p, _) in nodes:
            p.terminate()
        for (p, _) in nodes:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for p in cluster:
            p.kill()
            p.wait()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
