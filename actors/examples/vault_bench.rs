//! Vault throughput: `cargo run --release -p kafclaw-actors --example vault_bench`.
//!
//! Prints operations per second for
//! - pure crypto: XChaCha20-Poly1305 seal + open of a 64-byte value with a fresh random nonce and
//!   associated data, as the vault does it, without encoding or store;
//! - vault seal through the store without a flush per secret (`import` of a batch, one flush);
//! - vault open through the store (`get`: read, decode, authenticate, decrypt);
//! - vault `set` + `get` round trips, each `set` made durable (one store flush per write);
//! - opening a passphrase-protected vault (Argon2id with the production parameters).

use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use kafclaw_actors::paths::Home;
use kafclaw_actors::store::StoreDb;
use kafclaw_actors::vault::{SecretValue, Vault};

const VALUE: &[u8] = b"sk-proj-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    pure_crypto()?;

    let dir = tempfile::tempdir()?;
    let home = Home::new(dir.path());
    let db = StoreDb::open(&home.store_dir())?;
    let (vault, _) = Vault::open_or_create(&home, &db, None)?;

    let batch = 5_000;
    let entries: Vec<(String, SecretValue)> = (0..batch)
        .map(|i| (format!("bench.{i}"), SecretValue::from(VALUE)))
        .collect();
    let started = Instant::now();
    vault.import(entries)?;
    report(
        "vault seal via import (one flush per batch)",
        batch,
        started.elapsed(),
    );

    let started = Instant::now();
    for i in 0..batch {
        let value = vault.get(&format!("bench.{i}"))?;
        assert_eq!(value.as_ref().map(SecretValue::expose), Some(VALUE));
    }
    report(
        "vault open via get (store read + decrypt)",
        batch,
        started.elapsed(),
    );

    let rounds = 200;
    let started = Instant::now();
    for i in 0..rounds {
        let name = format!("durable.{i}");
        vault.set(&name, SecretValue::from(VALUE))?;
        let value = vault.get(&name)?;
        assert_eq!(value.as_ref().map(SecretValue::expose), Some(VALUE));
    }
    report("vault set+get, each set flushed", rounds, started.elapsed());

    let mut vault = vault;
    let started = Instant::now();
    let rotation = vault.rotate_key()?;
    println!(
        "{:<48} {:>10.1} ms for {} secrets",
        "vault rotate_key",
        started.elapsed().as_secs_f64() * 1e3,
        rotation.resealed
    );
    drop(vault);

    let dir = tempfile::tempdir()?;
    let home = Home::new(dir.path());
    let db = StoreDb::open(&home.store_dir())?;
    let passphrase = Some(SecretValue::from("correct horse battery staple"));
    let started = Instant::now();
    drop(Vault::open_or_create(&home, &db, passphrase.clone())?);
    let created = started.elapsed();
    let started = Instant::now();
    drop(Vault::open_existing(&home, &db, passphrase)?);
    println!(
        "{:<48} {:>10.1} ms create, {:.1} ms open",
        "passphrase vault (argon2id 64 MiB, t=3)",
        created.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

fn pure_crypto() -> Result<(), Box<dyn std::error::Error>> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| e.to_string())?;
    let cipher = XChaCha20Poly1305::new(&key.into());
    let aad = b"kafclaw-vault\0\0\0\0\x01\x000123456789abcdef\0providers.openai.api_key";
    let rounds = 200_000;
    let started = Instant::now();
    for _ in 0..rounds {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
        let nonce = &XNonce::from(nonce);
        let sealed = cipher
            .encrypt(nonce, Payload { msg: VALUE, aad })
            .map_err(|_| "seal failed")?;
        let opened = cipher
            .decrypt(nonce, Payload { msg: &sealed, aad })
            .map_err(|_| "open failed")?;
        assert_eq!(opened.len(), VALUE.len());
    }
    report(
        "pure crypto seal+open (64-byte value)",
        rounds,
        started.elapsed(),
    );
    Ok(())
}

fn report(what: &str, count: usize, elapsed: Duration) {
    println!(
        "{what:<48} {:>10.0} /s  ({count} in {:.1} ms)",
        count as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3
    );
}
