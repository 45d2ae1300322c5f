//! Unit tests of media naming, host rules and checksum decoding.

use super::*;

#[test]
fn names_hosts_and_checksums() {
    assert_eq!(file_stem("wamid.HBg+A=/x:"), "wamid.HBg+A=%2Fx%3A");
    assert_eq!(file_stem(".."), "%2E.");
    assert_eq!(file_stem(&"a".repeat(300)).len(), 40);
    assert_eq!(extension_for("image/jpeg"), "jpg");
    assert_eq!(extension_for("application/x-sh"), "bin");
    assert_eq!(normalize_mime("Audio/OGG; codecs=opus"), "audio/ogg");
    let graph = "http://127.0.0.1:8080";
    assert!(download_host_allowed("http://127.0.0.1:8080/dl?x=1", graph));
    assert!(download_host_allowed(
        "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1",
        graph
    ));
    assert!(!download_host_allowed(
        "http://lookaside.fbsbx.com/a",
        graph
    ));
    assert!(!download_host_allowed(
        "https://evil.example/fbsbx.com",
        graph
    ));
    assert!(!download_host_allowed(
        "https://fbsbx.com.evil.example/",
        graph
    ));
    assert!(!download_host_allowed("http://127.0.0.1:8081/dl", graph));
    let digest: [u8; 32] = Sha256::digest(b"x").into();
    assert_eq!(decode_sha256(&hex::encode(digest)), Some(digest));
    let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
    assert_eq!(decode_sha256(&b64), Some(digest));
    assert_eq!(decode_sha256("nope"), None);
}
