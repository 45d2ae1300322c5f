#!/usr/bin/env bash
# The long crash soak of issue 12: signed WhatsApp webhooks, bridge messages and /chat against
# the real binary, kill -9 at random moments, restart, re-delivery of everything not
# acknowledged, then the proof (0 lost, 0 repeated model calls, 0 repeated tools, 0 WhatsApp
# replies sent twice, 0 bridge replies accepted twice, the audit chain verified after every
# kill). Prints the seed, the rounds and every figure; exits 1 when a figure is not 0.
#
# Usage: tests/bench/crash_soak.sh [KILLS (default 50)] [SEED (default: from the clock)] [WORKERS]
# WORKERS multiplies the senders (3 WhatsApp, 2 bridge, 2 /chat; default 1).
# The same test runs in `cargo test` with 10 kills, seed 12 and 1.
set -euo pipefail
KILLS="${1:-50}"
SEED="${2:-$(date +%s)}"
WORKERS="${3:-1}"
cd "$(dirname "$0")/../.."
echo "crash soak: $KILLS kills, seed $SEED, worker factor $WORKERS"
SOAK_KILLS="$KILLS" SOAK_SEED="$SEED" SOAK_WORKERS="$WORKERS" cargo test --all-features --test it \
    exactly_once::soak::random_kills_under_load_lose_nothing_and_repeat_nothing \
    -- --exact --nocapture 2>&1 | grep -E "crash soak|test result|panicked|assertion" 
