#!/usr/bin/env python3
"""Growth soak (issue 20): does a long-running gateway stay flat in memory and on disk?
Prints figures; asserts nothing.

For each run: a temporary --home with WhatsApp on the instant model server (the set-up of
webhook_ingest.py, reused; removed after the run unless --keep-home), then for --minutes:
- `--example webhook_load` drives signed deliveries from an owner flat out over --connections
  keep-alive connections (every message is admitted, journaled, answered and sent; the
  token-spike trigger is raised out of reach, or the flood would quarantine the channel and
  the soak would measure held messages only). The flood is self-limiting: once the channel's
  unfinished messages reach `store.max_pending` (--max-pending) the webhook answers 503 +
  Retry-After and that connection waits as Meta would, so the soak runs at the rate turns
  are sustained; the 503s are counted apart (`refused`), never as messages;
- --chat-workers threads drive `POST /chat` turns (one at a time each, 20 sessions per worker,
  an Idempotency-Key per turn, so each is journaled);
- every --interval seconds: the gateway's RSS (/proc/PID/status VmRSS), the store's size on
  disk (timeline.db), the audit log's size, and from /metrics the deliveries stored
  (kafclaw_channel_inbound_total), replies sent, inbox depth (pending, held), audit records
  (kafclaw_audit_head_seq), signals dropped and deliveries refused at the backlog bound.
Printed: the series, RSS and store per minute, the end's /proc/PID/smaps_rollup, then over
the last 20 minutes (the last 2/3 for shorter runs) the RSS slope (MiB/min), the store and
audit growth per message, whether the store levelled off, and the largest RSS seen, against
the goals (RSS <= 64 MiB, flat).

Runs: one per binary x --env x --cache-mib value (store.cache_mib; default "32", the
default). To compare with sled's own cache default of 1 GiB in the same run: --cache-mib
1024,32; allocator variants in the same run: --env '' --env 'MALLOC_ARENA_MAX=8'
--env 'LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2'. --retention-minutes N sets
store.retention_minutes, so pruning runs within the soak and the store should level off.

Usage: tests/bench/growth_soak.py [--minutes 30] [--interval 10] [--connections 16]
           [--chat-workers 2] [--cache-mib 32] [--retention-minutes N] [--max-pending N]
           [--env 'K=V ...']...
           [--keep-home] [kafclaw binary ...]
       CI size: --minutes 1 --interval 5
       (build: `cargo build --release && cargo build --release -p kafclaw-actors
       --example webhook_load --example instant_model`)
"""
import argparse, http.client, json, os, re, shutil, subprocess, sys, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import webhook_ingest as ingest  # noqa: E402  (one webhook set-up and one signer: its own)

TOKEN = "kc_bench-token-0123456789abcdefghijklmnopqrstuvwxyz"
MIB = 1024.0 * 1024.0


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def tree_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def scrape(dashboard):
    """A few figures from /metrics (0 when absent)."""
    host, port = dashboard.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    text = conn.getresponse().read().decode()
    conn.close()

    def total(pattern):
        return sum(float(v) for v in re.findall(pattern + r"\s+([\d.e+]+)$", text, re.M))

    return {
        # Every stored delivery (accepted, held or dropped): the store and audit grow with it.
        "accepted": total(r"^kafclaw_channel_inbound_total\{[^}]*\}"),
        "sent": total(r'^kafclaw_channel_messages_total\{[^}]*direction="outbound"[^}]*state="sent"[^}]*\}'),
        "pending": total(r'^kafclaw_channel_inbox_depth\{[^}]*queue="pending"[^}]*\}'),
        "held": total(r'^kafclaw_channel_inbox_depth\{[^}]*queue="held"[^}]*\}'),
        "incidents": total(r"^kafclaw_incidents_open"),
        "audit_records": total(r"^kafclaw_audit_head_seq"),
        "dropped": total(r"^kafclaw_incident_signals_dropped_total\{[^}]*\}"),
        "refused": total(r"^kafclaw_channel_backlog_refused_total\{[^}]*\}"),
    }


def chat_worker(addr, worker, stop, counts):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    n = 0
    while not stop.is_set():
        n += 1
        body = json.dumps({"message": f"soak message {n}", "session": f"soak-{worker}-{n % 20}"})
        try:
            conn.request("POST", "/chat", body=body, headers={
                "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json",
                "Idempotency-Key": f"soak-{worker}-{n}"})
            response = conn.getresponse()
            response.read()
            counts["ok" if response.status == 200 else "non_ok"] += 1
        except (OSError, http.client.HTTPException):
            counts["errors"] += 1
            conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=30)


def slope(points):
    """Least-squares slope of (t, y) pairs, per second."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (y - my) for t, y in points) / den if den else 0.0


def smaps_rollup(pid):
    """Rss split of /proc/PID/smaps_rollup (anonymous vs file-backed), kB."""
    wanted = ("Rss", "Anonymous", "Private_Dirty", "Shared_Clean", "Private_Clean")
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in wanted:
                    out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def run(binary, base, args, cache_mib, extra):
    env = {"KAFCLAW_GATEWAY_AUTH_TOKEN": TOKEN, "KAFCLAW_STORE_CACHE_MIB": str(cache_mib),
           # A flood from one owner is a token spike by design (the channel is quarantined and
           # every later message held): the soak measures the steady state, not the incident.
           "KAFCLAW_INCIDENTS_TOKEN_SPIKE_MIN_TOKENS": "1000000000000"}
    if args.retention_minutes:
        env["KAFCLAW_STORE_RETENTION_MINUTES"] = str(args.retention_minutes)
    if args.max_pending:
        env["KAFCLAW_STORE_MAX_PENDING"] = str(args.max_pending)
    env.update(extra)
    gateway, addr = ingest.start_gateway(binary, base, env)
    stop = threading.Event()
    chats = {"ok": 0, "non_ok": 0, "errors": 0}
    workers = [threading.Thread(target=chat_worker, args=(addr, w, stop, chats), daemon=True)
               for w in range(args.chat_workers)]
    seconds = int(args.minutes * 60)
    load = subprocess.Popen(
        [ingest.LOAD, "--url", f"http://{addr}/webhooks/whatsapp",
         "--connections", str(args.connections), "--duration", str(seconds),
         "--app-secret", ingest.SECRET, "--from", ingest.OWNER,
         "--phone-number-id", ingest.PNID],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for w in workers:
        w.start()
    kafclaw = f"{gateway.home}/.kafclaw"
    samples = []
    label = " ".join(f"{k}={v}" for k, v in extra.items()) or "(no extra environment)"
    if args.retention_minutes:
        label += f", store.retention_minutes {args.retention_minutes}"
    if args.max_pending:
        label += f", store.max_pending {args.max_pending}"
    print(f"== {binary}, store.cache_mib {cache_mib}, {label}, {args.minutes} min, "
          f"{args.connections} webhook connections, {args.chat_workers} /chat workers")
    print(f"{'t_s':>6} {'rss_MiB':>8} {'store_MiB':>9} {'audit_MiB':>9} {'accepted':>9} "
          f"{'sent':>9} {'chat':>7} {'pending':>7} {'held':>7} {'records':>8} {'dropped':>7} "
          f"{'refused':>8}")
    start = time.monotonic()
    try:
        while True:
            t = time.monotonic() - start
            m = scrape(gateway.dashboard)
            sample = {
                "t": t, "rss": rss_bytes(gateway.pid),
                "store": tree_bytes(f"{kafclaw}/timeline.db"),
                "audit": tree_bytes(f"{kafclaw}/audit"), "chat": chats["ok"], **m,
            }
            samples.append(sample)
            print(f"{t:6.0f} {sample['rss'] / MIB:8.1f} {sample['store'] / MIB:9.1f} "
                  f"{sample['audit'] / MIB:9.1f} {m['accepted']:9.0f} {m['sent']:9.0f} "
                  f"{chats['ok']:7d} {m['pending']:7.0f} {m['held']:7.0f} {m['audit_records']:8.0f} "
                  f"{m['dropped']:7.0f} {m['refused']:8.0f}", flush=True)
            if load.poll() is not None or t >= seconds:
                break
            time.sleep(max(0.0, args.interval - (time.monotonic() - start - t)))
        stop.set()
        rollup = smaps_rollup(gateway.pid)
        out, err = load.communicate(timeout=60)
    finally:
        stop.set()
        load.kill()
        gateway.kill()
        gateway.wait()
        if args.keep_home:
            print(f"home kept: {gateway.home}")
        else:
            shutil.rmtree(gateway.home, ignore_errors=True)
    print("webhook_load: " + " | ".join(out.strip().splitlines()))
    if load.returncode:
        print(err.strip())
    print(f"/chat: {chats['ok']} turns answered, {chats['non_ok']} refused, {chats['errors']} errors")
    print("smaps_rollup at the end (MiB): " + ", ".join(
        f"{k} {v / 1024:.1f}" for k, v in rollup.items()))
    summarize(samples)


def per_minute(samples):
    """RSS (largest) and store (last) of each minute, with the messages taken in it."""
    print(f"{'minute':>6} {'rss_max_MiB':>11} {'store_MiB':>9} {'messages':>9} {'refused':>8}")
    minutes = {}
    for s in samples:
        minutes.setdefault(int(s["t"] // 60), []).append(s)
    before = samples[0]
    for minute in sorted(minutes):
        group = minutes[minute]
        last = group[-1]
        taken = (last["accepted"] + last["chat"]) - (before["accepted"] + before["chat"])
        print(f"{minute + 1:6d} {max(s['rss'] for s in group) / MIB:11.1f} "
              f"{last['store'] / MIB:9.1f} {taken:9.0f} {last['refused'] - before['refused']:8.0f}")
        before = last


def summarize(samples):
    per_minute(samples)
    span = samples[-1]["t"] - samples[0]["t"]
    window = min(20 * 60.0, span * 2 / 3)
    tail = [s for s in samples if s["t"] >= samples[-1]["t"] - window]
    first, last = tail[0], tail[-1]
    messages = (last["accepted"] - first["accepted"]) + (last["chat"] - first["chat"])
    rss_slope = slope([(s["t"], s["rss"] / MIB) for s in tail]) * 60
    peak = max(s["rss"] for s in samples) / MIB
    print(f"over the last {window / 60:.1f} min ({len(tail)} samples, {messages:.0f} messages, "
          f"{messages / max(window, 1):.0f}/s):")
    print(f"  RSS: peak {peak:.1f} MiB (goal <= 64), slope {rss_slope:+.2f} MiB/min, "
          f"first {first['rss'] / MIB:.1f} -> last {last['rss'] / MIB:.1f} MiB")
    for key in ("store", "audit"):
        grown = last[key] - first[key]
        per = grown / messages if messages else 0.0
        print(f"  {key}: {first[key] / MIB:.1f} -> {last[key] / MIB:.1f} MiB, "
              f"{per:.0f} bytes/message, slope "
              f"{slope([(s['t'], s[key] / MIB) for s in tail]) * 60:+.2f} MiB/min")
    third = max(1, len(tail) // 3)
    early = slope([(s["t"], s["store"] / MIB) for s in tail[:third + 1]]) * 60
    late = slope([(s["t"], s["store"] / MIB) for s in tail[-third - 1:]]) * 60
    print(f"  store slope, first vs last third of that window: {early:+.2f} -> {late:+.2f} MiB/min "
          f"({'levels off' if abs(late) <= max(0.5, abs(early) / 4) else 'still growing'})")
    print(f"  refused at the backlog bound (503 + Retry-After): {last['refused']:.0f} in the whole run")
    print(f"  whole run: {samples[-1]['accepted'] + samples[-1]['chat']:.0f} messages, "
          f"store {samples[-1]['store'] / max(samples[-1]['accepted'] + samples[-1]['chat'], 1):.0f} "
          f"bytes/message, signals dropped {samples[-1]['dropped']:.0f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--interval", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--chat-workers", type=int, default=2)
    parser.add_argument("--cache-mib", default="32")
    parser.add_argument("--retention-minutes", type=int, default=0,
                        help="store.retention_minutes (0: the default 30 days); pruning then "
                        "runs every quarter of it, and the store should level off")
    parser.add_argument("--max-pending", type=int, default=0,
                        help="store.max_pending (0: the default, 10000); the flood's 503s "
                        "start there")
    parser.add_argument("--keep-home", action="store_true",
                        help="keep each run's --home (for `--example store_cost`)")
    parser.add_argument("--env", action="append", default=[], metavar="'K=V K=V'",
                        help="one more run per --env with these variables (allocator tuning, "
                        "LD_PRELOAD, ...); without it one run with none")
    parser.add_argument("binary", nargs="*", default=[f"{ingest.TARGET}/release/kafclaw"])
    args = parser.parse_args()
    env_sets = [dict(kv.split("=", 1) for kv in spec.split()) for spec in args.env] or [{}]
    for path in (*args.binary, ingest.LOAD, ingest.MODEL):
        if not os.path.exists(path):
            sys.exit(f"{path} is missing (see the build line in this script's doc)")
    model, base = ingest.start_model()
    try:
        for binary in args.binary:
            for extra in env_sets:
                for cache in args.cache_mib.split(","):
                    run(binary, base, args, int(cache), extra)
    finally:
        model.kill()


if __name__ == "__main__":
    main()
