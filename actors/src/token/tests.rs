use std::time::Duration;

use super::*;
use crate::store::{KvTree, StoreDb, TreeName};

fn key() -> TokenHashKey {
    TokenHashKey::from_bytes([7; 32])
}

fn open() -> (tempfile::TempDir, StoreDb, TokenRegistry) {
    let dir = tempfile::tempdir().unwrap();
    let db = StoreDb::open(&dir.path().join("timeline.db")).unwrap();
    let registry = TokenRegistry::open(&db, key()).unwrap();
    (dir, db, registry)
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn secs(n: i64) -> time::Duration {
    time::Duration::seconds(n)
}

fn is_valid(check: &TokenCheck) -> bool {
    matches!(check, TokenCheck::Valid { .. })
}

/// Every byte of the `Tokens` tree, keys and values.
fn all_token_bytes(db: &StoreDb) -> Vec<u8> {
    let mut bytes = Vec::new();
    db.tree(TreeName::Tokens)
        .unwrap()
        .for_each(|k, v| {
            bytes.extend_from_slice(k);
            bytes.push(0);
            bytes.extend_from_slice(v);
            bytes.push(0);
            true
        })
        .unwrap();
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn scope_permits_table() {
    use Scope::*;
    let table = [
        (Admin, Admin, true),
        (Admin, Read, true),
        (Admin, Chat, true),
        (Read, Admin, false),
        (Read, Read, true),
        (Read, Chat, false),
        (Chat, Admin, false),
        (Chat, Read, false),
        (Chat, Chat, true),
    ];
    for (held, required, expected) in table {
        assert_eq!(held.permits(required), expected, "{held} for {required}");
    }
}

#[test]
fn scope_parses_displays_and_serializes_lowercase() {
    for scope in Scope::ALL {
        assert_eq!(scope.to_string().parse::<Scope>().unwrap(), scope);
        assert_eq!(
            serde_json::to_string(&scope).unwrap(),
            format!("\"{scope}\"")
        );
    }
    assert!("Admin".parse::<Scope>().is_err());
    assert!("write".parse::<Scope>().is_err());
}

#[test]
fn parse_ttl_table() {
    let ok = [
        ("30d", 30 * 86_400),
        ("12h", 12 * 3_600),
        ("90m", 90 * 60),
        ("3600s", 3_600),
        ("2w", 14 * 86_400),
    ];
    for (input, seconds) in ok {
        assert_eq!(
            parse_ttl(input).unwrap(),
            Duration::from_secs(seconds),
            "{input}"
        );
    }
    for bad in [
        "",
        "30",
        "d",
        "0d",
        "-1d",
        "1.5h",
        "30 d",
        "30D",
        "1y",
        "1h30m",
        "99999d",
        "99999999999999999999999s",
    ] {
        assert!(parse_ttl(bad).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn names_are_validated() {
    for good in ["a", "ci-bot", "grafana.read_1", &"x".repeat(64)] {
        validate_name(good).unwrap();
    }
    for bad in [
        "",
        &"x".repeat(65),
        "has space",
        "slash/",
        "colon:x",
        "ünicode",
        "kc_looks_like_a_token",
    ] {
        assert!(validate_name(bad).is_err(), "{bad:?} should be refused");
    }
}

#[actix_rt::test]
async fn created_token_has_format_and_verifies_with_its_scope() {
    let (_dir, _db, registry) = open();
    for scope in Scope::ALL {
        let issued = registry.create(scope, None, None).await.unwrap();
        let token = issued.token.expose();
        assert!(token.starts_with(TOKEN_PREFIX));
        assert_eq!(token.len(), TOKEN_PREFIX.len() + MIN_TOKEN_CHARS);
        assert!(token[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        match registry.verify(token, now()) {
            TokenCheck::Valid {
                name, scope: got, ..
            } => {
                assert_eq!(got, scope);
                assert_eq!(&*name, issued.record.name);
            }
            other => panic!("expected valid, got {other:?}"),
        }
    }
}

#[actix_rt::test]
async fn unknown_and_malformed_tokens_are_unknown() {
    let (_dir, _db, registry) = open();
    registry.create(Scope::Admin, None, None).await.unwrap();
    let long = "x".repeat(10_000);
    for presented in ["", "kc_nope", "Bearer x", long.as_str()] {
        assert_eq!(registry.verify(presented, now()), TokenCheck::Unknown);
    }
}

#[actix_rt::test]
async fn expired_token_is_expired() {
    let (_dir, _db, registry) = open();
    let issued = registry
        .create(
            Scope::Read,
            Some(Duration::from_secs(1)),
            Some("short".into()),
        )
        .await
        .unwrap();
    assert!(issued.record.expires_at.is_some());
    assert!(is_valid(&registry.verify(issued.token.expose(), now())));
    assert_eq!(
        registry.verify(issued.token.expose(), now() + secs(86_400)),
        TokenCheck::Expired {
            name: Arc::from("short")
        }
    );
    let zero = registry
        .create(Scope::Read, Some(Duration::ZERO), None)
        .await;
    assert!(matches!(zero, Err(TokenError::InvalidDuration { .. })));
}

#[actix_rt::test]
async fn revoked_token_is_refused_here_and_by_a_second_registry_after_reload() {
    let (_dir, db, gateway) = open();
    let issued = gateway
        .create(Scope::Chat, None, Some("phone".into()))
        .await
        .unwrap();
    let token = issued.token.expose();

    // A second registry over the same store plays the other side (the CLI, or the gateway).
    let cli = TokenRegistry::open(&db, key()).unwrap();
    assert!(is_valid(&cli.verify(token, now())));
    let seen = gateway.generation();
    assert!(!gateway.changed_since(seen).unwrap());

    let revoked = cli.revoke("phone").await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(matches!(
        cli.verify(token, now()),
        TokenCheck::Revoked { .. }
    ));

    // The gateway still has its old table until it polls.
    assert!(is_valid(&gateway.verify(token, now())));
    assert!(gateway.changed_since(seen).unwrap());
    assert!(gateway.reload_if_changed().unwrap());
    assert!(!gateway.reload_if_changed().unwrap());
    assert_eq!(
        gateway.verify(token, now()),
        TokenCheck::Revoked {
            name: Arc::from("phone")
        }
    );

    // Revoking again keeps the first revocation time.
    let again = gateway.revoke("phone").await.unwrap();
    assert_eq!(again.revoked_at, revoked.revoked_at);
}

#[actix_rt::test]
async fn revoking_an_unknown_name_is_an_error_that_never_echoes_a_token() {
    let (_dir, _db, registry) = open();
    assert!(matches!(
        registry.revoke("nobody").await,
        Err(TokenError::NotFound { .. })
    ));
    let issued = registry.create(Scope::Read, None, None).await.unwrap();
    let error = registry.revoke(issued.token.expose()).await.unwrap_err();
    assert!(!error.to_string().contains(issued.token.expose()));
}

#[actix_rt::test]
async fn store_never_contains_the_token() {
    let (_dir, db, registry) = open();
    let mut tokens = Vec::new();
    for scope in Scope::ALL {
        tokens.push(registry.create(scope, None, None).await.unwrap());
    }
    let rotation = registry
        .rotate_admin(Duration::from_secs(60))
        .await
        .unwrap();
    tokens.push(rotation.issued);
    for issued in &tokens {
        registry.verify(issued.token.expose(), now());
    }
    registry.persist_last_used().await.unwrap();

    let bytes = all_token_bytes(&db);
    for issued in &tokens {
        let token = issued.token.expose();
        let body = &token[TOKEN_PREFIX.len()..];
        assert!(!contains(&bytes, token.as_bytes()));
        assert!(!contains(&bytes, body.as_bytes()));
        assert!(contains(&bytes, issued.record.hash.as_bytes()));
    }
    for record in registry.list().unwrap() {
        let json = serde_json::to_string(&record).unwrap();
        assert!(tokens.iter().all(|t| !json.contains(t.token.expose())));
    }
}

#[actix_rt::test]
async fn record_and_hash_index_are_stored_together() {
    let (_dir, db, registry) = open();
    let issued = registry
        .create(Scope::Read, None, Some("grafana".into()))
        .await
        .unwrap();
    let tree = db.tree(TreeName::Tokens).unwrap();
    let stored: TokenRecord = tree.get_json("name:grafana").unwrap().unwrap();
    assert_eq!(stored, issued.record);
    assert_eq!(
        tree.get(format!("hash:{}", issued.record.hash))
            .unwrap()
            .unwrap(),
        b"grafana"
    );
}

#[actix_rt::test]
async fn names_are_unique_and_default_names_count_up() {
    let (_dir, _db, registry) = open();
    let first = registry.create(Scope::Read, None, None).await.unwrap();
    let second = registry.create(Scope::Read, None, None).await.unwrap();
    assert_eq!(first.record.name, "token-1");
    assert_eq!(second.record.name, "token-2");
    assert!(matches!(
        registry
            .create(Scope::Admin, None, Some("token-2".into()))
            .await,
        Err(TokenError::NameTaken { .. })
    ));
    registry.revoke("token-2").await.unwrap();
    assert!(matches!(
        registry
            .create(Scope::Admin, None, Some("token-2".into()))
            .await,
        Err(TokenError::NameTaken { .. })
    ));
    assert!(matches!(
        registry
            .create(Scope::Admin, None, Some("bad name".into()))
            .await,
        Err(TokenError::InvalidName { .. })
    ));
    let names: Vec<_> = registry
        .list()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["token-1", "token-2"]);
}

#[actix_rt::test]
async fn first_use_is_reported_exactly_once() {
    let (_dir, db, registry) = open();
    let issued = registry.create(Scope::Chat, None, None).await.unwrap();
    let token = issued.token.expose();
    let first_uses = |registry: &TokenRegistry| {
        (0..5)
            .filter(|_| {
                matches!(
                    registry.verify(token, now()),
                    TokenCheck::Valid {
                        first_use: true,
                        ..
                    }
                )
            })
            .count()
    };
    assert_eq!(first_uses(&registry), 1);
    // A reload keeps the in-memory knowledge.
    registry.reload_from_store().unwrap();
    assert_eq!(first_uses(&registry), 0);
    // Once persisted, a fresh registry (a restarted gateway) knows it too.
    registry.persist_last_used().await.unwrap();
    let restarted = TokenRegistry::open(&db, key()).unwrap();
    assert_eq!(first_uses(&restarted), 0);
}

#[actix_rt::test]
async fn last_used_is_kept_in_memory_and_persisted_lazily() {
    let (_dir, db, registry) = open();
    let issued = registry
        .create(Scope::Read, None, Some("dash".into()))
        .await
        .unwrap();
    let tree = db.tree(TreeName::Tokens).unwrap();
    let stored = |tree: &KvTree| -> TokenRecord { tree.get_json("name:dash").unwrap().unwrap() };

    let at = now();
    registry.verify(issued.token.expose(), at);
    assert_eq!(stored(&tree).last_used_at, None, "no write per request");
    let listed = registry.list().unwrap();
    assert!(listed[0].last_used_at.is_some(), "list shows memory");

    assert_eq!(registry.persist_last_used().await.unwrap(), 1);
    let persisted = stored(&tree).last_used_at.unwrap();
    assert!((persisted - at).abs() < secs(1));
    assert_eq!(registry.persist_last_used().await.unwrap(), 0);
}

#[actix_rt::test]
async fn static_admin_token_verifies_and_near_misses_do_not() {
    let (_dir, _db, registry) = open();
    let configured = "correct-horse-battery-staple-0123456789-abcdefgh";
    assert_eq!(registry.verify(configured, now()), TokenCheck::Unknown);
    registry.set_static_admin(Some(configured));
    assert_eq!(
        registry.verify(configured, now()),
        TokenCheck::Valid {
            name: Arc::from(STATIC_ADMIN_NAME),
            scope: Scope::Admin,
            first_use: true,
        }
    );
    let mut one_changed = configured.to_owned();
    one_changed.replace_range(10..11, "X");
    let near_misses = [
        one_changed.as_str(),
        &configured[..configured.len() - 1],
        &configured[1..],
        &configured[..10],
        "",
        &format!("{configured} "),
        &format!("{configured}x"),
        &configured.to_uppercase(),
    ];
    for miss in near_misses {
        assert_eq!(
            registry.verify(miss, now()),
            TokenCheck::Unknown,
            "{miss:?}"
        );
    }
    assert!(matches!(
        registry.verify_bytes(configured.as_bytes(), now()),
        TokenCheck::Valid {
            first_use: false,
            ..
        }
    ));
    assert!(registry.has_active_tokens(now()));
    registry.set_static_admin(None);
    assert_eq!(registry.verify(configured, now()), TokenCheck::Unknown);
    assert!(!registry.has_active_tokens(now()));
    registry.set_static_admin(Some(""));
    assert_eq!(registry.verify("", now()), TokenCheck::Unknown);
}

#[actix_rt::test]
async fn rotation_keeps_old_admin_tokens_until_the_grace_deadline() {
    let (_dir, db, registry) = open();
    let configured = "env-admin-token-with-enough-entropy-0123456789abcdef";
    registry.set_static_admin(Some(configured));
    let other_admin = registry
        .create(Scope::Admin, None, Some("ops".into()))
        .await
        .unwrap();

    let first = registry
        .rotate_admin(Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(first.superseded, [STATIC_ADMIN_NAME]);
    assert!(first.issued.record.name.starts_with("admin-"));
    assert_eq!(first.issued.record.scope, Scope::Admin);
    let deadline = first.old_valid_until;
    assert!(is_valid(&registry.verify(configured, deadline - secs(1))));
    assert_eq!(
        registry.verify(configured, deadline + secs(1)),
        TokenCheck::Revoked {
            name: Arc::from(STATIC_ADMIN_NAME)
        }
    );
    assert!(is_valid(
        &registry.verify(first.issued.token.expose(), deadline + secs(1))
    ));

    // A second rotation supersedes the first rotated token, not unrelated admin tokens.
    let second = registry
        .rotate_admin(Duration::from_secs(60))
        .await
        .unwrap();
    assert_ne!(second.issued.record.name, first.issued.record.name);
    assert!(second.superseded.contains(&first.issued.record.name));
    let old = first.issued.token.expose();
    assert!(is_valid(
        &registry.verify(old, second.old_valid_until - secs(1))
    ));
    assert!(matches!(
        registry.verify(old, second.old_valid_until + secs(1)),
        TokenCheck::Revoked { .. }
    ));
    // The env token keeps its earlier deadline (a later rotation never extends it).
    assert!(matches!(
        registry.verify(configured, deadline + secs(1)),
        TokenCheck::Revoked { .. }
    ));
    assert!(is_valid(
        &registry.verify(other_admin.token.expose(), deadline + secs(86_400))
    ));
    assert!(is_valid(
        &registry.verify(second.issued.token.expose(), deadline + secs(86_400))
    ));

    // The env token's retirement survives a restart with the same value.
    let restarted = TokenRegistry::open(&db, key()).unwrap();
    restarted.set_static_admin(Some(configured));
    assert!(matches!(
        restarted.verify(configured, deadline + secs(1)),
        TokenCheck::Revoked { .. }
    ));
    // A new value set by the operator is accepted.
    restarted.set_static_admin(Some("a-brand-new-env-admin-token-0123456789abcdefghij"));
    assert!(is_valid(&restarted.verify(
        "a-brand-new-env-admin-token-0123456789abcdefghij",
        deadline + secs(1)
    )));
}

#[actix_rt::test]
async fn rotation_with_zero_grace_refuses_the_old_token_at_once() {
    let (_dir, _db, registry) = open();
    let configured = "env-admin-token-with-enough-entropy-0123456789abcdef";
    registry.set_static_admin(Some(configured));
    let rotation = registry.rotate_admin(Duration::ZERO).await.unwrap();
    assert!(matches!(
        registry.verify(configured, now()),
        TokenCheck::Revoked { .. }
    ));
    assert!(is_valid(
        &registry.verify(rotation.issued.token.expose(), now())
    ));
}

#[actix_rt::test]
async fn debug_output_never_shows_secrets() {
    let (_dir, _db, registry) = open();
    let issued = registry.create(Scope::Admin, None, None).await.unwrap();
    let token = issued.token.expose().to_owned();
    for shown in [
        format!("{issued:?}"),
        format!("{:?}", issued.token),
        format!("{registry:?}"),
    ] {
        assert!(!shown.contains(&token), "{shown}");
        assert!(!shown.contains(&token[TOKEN_PREFIX.len()..]), "{shown}");
    }
    let key = TokenHashKey::from_bytes([0xab; 32]);
    let shown = format!("{key:?}");
    assert_eq!(shown, "TokenHashKey(..)");
    assert!(!shown.to_lowercase().contains("abab"));
    assert!(!format!("{:?}", TokenHashKey::generate().unwrap()).contains(", "));
}

#[actix_rt::test]
async fn a_different_hash_key_recognises_nothing() {
    let (_dir, db, registry) = open();
    let issued = registry.create(Scope::Admin, None, None).await.unwrap();
    let other = TokenRegistry::open(&db, TokenHashKey::from_bytes([8; 32])).unwrap();
    assert_eq!(
        other.verify(issued.token.expose(), now()),
        TokenCheck::Unknown
    );
}

#[test]
fn registry_is_send_sync_and_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<TokenRegistry>();
}
