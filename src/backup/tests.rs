//! Unit tests of the backup layout, manifest MAC, staging refusals and the swap's roll-back.

use super::layout::{classify, Part};

#[test]
fn names_outside_the_layout_are_refused() {
    for bad in [
        "/etc/passwd",
        "../x",
        "timeline.db/../../x",
        "audit/../config.json",
        "",
        "a//b",
        "./config.json",
        "other.txt",
        "audit/evil.jsonl",
        "workspace/notes.md",
        "timeline.db",
    ] {
        assert!(classify(bad.as_bytes(), false).is_err(), "{bad:?} accepted");
    }
    assert_eq!(classify(b"timeline.db/", true).unwrap().1, Part::Store);
    assert_eq!(
        classify(b"audit/audit-000001.jsonl", false).unwrap().1,
        Part::Audit
    );
    assert_eq!(
        classify(b"workspace/SOUL.md", false).unwrap().1,
        Part::Identity
    );
    assert_eq!(
        classify(b"timeline.db/blobs/12", false).unwrap().1,
        Part::Store
    );
}
