use super::{PAGE, SCRIPT, STYLE};

#[test]
fn the_page_has_no_inline_script_style_or_foreign_source() {
    let lower = PAGE.to_ascii_lowercase();
    for forbidden in [
        "<style",
        " style=",
        "javascript:",
        " onclick",
        " onload",
        " onerror",
        "http://",
        "https://",
        "//cdn",
    ] {
        assert!(!lower.contains(forbidden), "{forbidden} in index.html");
    }
    // The only script is the embedded file, loaded from this origin.
    assert_eq!(lower.matches("<script").count(), 1);
    assert!(lower.contains(r#"<script src="/assets/app.js""#));
    assert!(lower.contains(r#"href="/assets/app.css""#));
}

#[test]
fn the_script_never_evaluates_text_or_puts_a_token_anywhere_but_a_header() {
    for forbidden in [
        "eval(",
        "new Function",
        "innerHTML",
        "outerHTML",
        "document.write",
        "localStorage",
        "document.cookie",
        "setAttribute(\"style\"",
        "insertAdjacentHTML",
    ] {
        assert!(!SCRIPT.contains(forbidden), "{forbidden} in app.js");
    }
    assert!(SCRIPT.contains("sessionStorage"));
    assert!(SCRIPT.contains("\"Bearer \""));
    assert!(
        !STYLE.contains("url(http"),
        "no external resources in app.css"
    );
    assert!(!STYLE.contains("@import"));
}
