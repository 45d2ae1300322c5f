//! The dashboard page at `GET /` on the dashboard port (issue 16): one HTML file, one script
//! and one style sheet, embedded in the binary.
//!
//! Owns: serving the three files. They carry no data and need no token; the page asks the
//! operator for one, keeps it in `sessionStorage` and sends it only as `Authorization:
//! Bearer` to `/api/v1/*`. The edge's content security policy forbids inline script and
//! style, `eval` and framing, so the files never contain any.
//! Must not: put a token, a secret or any state of the gateway into these files.

use actix_web::HttpResponse;

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");

/// `GET /` (no auth): the page.
pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(PAGE)
}

/// `GET /assets/app.js` (no auth).
pub async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(SCRIPT)
}

/// `GET /assets/app.css` (no auth).
pub async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .body(STYLE)
}

#[cfg(test)]
mod tests;
