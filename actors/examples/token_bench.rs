//! Micro-benchmark of the per-request token check.
//!
//! `cargo run --release -p kafclaw-actors --example token_bench [ITERATIONS] [TOKENS]`
//!
//! Prints verifications per second for a valid token, an unknown token of the same shape, and
//! the config admin token, against a table of TOKENS stored tokens (default 1000).

use std::hint::black_box;
use std::time::Instant;

use kafclaw_actors::store::StoreDb;
use kafclaw_actors::token::{Scope, TokenCheck, TokenHashKey, TokenRegistry};
use time::OffsetDateTime;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let iterations: u32 = args.next().map_or(Ok(2_000_000), |a| a.parse())?;
    let table_size: usize = args.next().map_or(Ok(1_000), |a| a.parse())?;

    let db = StoreDb::temporary()?;
    let registry = TokenRegistry::open(&db, TokenHashKey::generate()?)?;
    let static_admin = "bench-env-admin-token-0123456789abcdefghijklmnopqrstuvwxyz";
    registry.set_static_admin(Some(static_admin));
    let issued = actix_rt::System::new().block_on(async {
        let mut last = None;
        for _ in 0..table_size.max(1) {
            last = Some(registry.create(Scope::Chat, None, None).await?);
        }
        Ok::<_, kafclaw_actors::token::TokenError>(last)
    })?;
    let Some(issued) = issued else {
        return Err("no token issued".into());
    };
    let valid = issued.token.expose().to_owned();
    let mut invalid = valid.clone();
    invalid.replace_range(10..11, if &valid[10..11] == "A" { "B" } else { "A" });

    let now = OffsetDateTime::now_utc();
    println!("{table_size} stored tokens, {iterations} verifications each");
    for (label, presented) in [
        ("valid", valid.as_str()),
        ("invalid", invalid.as_str()),
        ("static admin", static_admin),
    ] {
        let expect_valid = label != "invalid";
        let start = Instant::now();
        let mut accepted = 0u32;
        for _ in 0..iterations {
            if let TokenCheck::Valid { .. } = registry.verify(black_box(presented), black_box(now))
            {
                accepted += 1;
            }
        }
        let elapsed = start.elapsed();
        assert_eq!(accepted == iterations, expect_valid, "{label}");
        let per_second = f64::from(iterations) / elapsed.as_secs_f64();
        let nanos = elapsed.as_nanos() as f64 / f64::from(iterations);
        println!("{label:>12}: {per_second:>12.0} verifications/s ({nanos:.0} ns each)");
    }

    // Several threads at once: the read lock and usage atomics under contention.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let registry = registry.clone();
            let valid = valid.as_str();
            scope.spawn(move || {
                for _ in 0..iterations {
                    black_box(registry.verify(black_box(valid), black_box(now)));
                }
            });
        }
    });
    let total = f64::from(iterations) * threads as f64;
    println!(
        "{:>12}: {:>12.0} verifications/s across {threads} threads",
        "valid, mt",
        total / start.elapsed().as_secs_f64()
    );
    Ok(())
}
