//! `/docs`: a human-readable reference of the API, rendered in the browser from
//! `/openapi.json` by a small script of our own (`docs/render.js`, 7,019 bytes, no library,
//! nothing fetched from elsewhere), so the page cannot drift from the routes either.
//!
//! Open like `/openapi.json`: it shows how to call the API, not what it holds. The page's
//! Content-Security-Policy lets it run only its own script and fetch only from this server.

use axum::http::header;
use axum::response::IntoResponse;

/// The page: a shell that loads the renderer.
const PAGE: &str = include_str!("docs/docs.html");
/// The renderer.
const SCRIPT: &str = include_str!("docs/render.js");

/// What the page may load: its own script, its inline style, and `/openapi.json`.
const POLICY: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; \
                      base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /docs`: the API reference, for people.
#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "docs",
    tag = "meta",
    responses((status = 200, description = "the API reference as an HTML page, rendered from /openapi.json", content_type = "text/html", body = String))
)]
pub(crate) async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PAGE,
    )
}

/// `GET /docs/render.js`: the script that renders the reference.
#[utoipa::path(
    get,
    path = "/docs/render.js",
    operation_id = "docs_script",
    tag = "meta",
    responses((status = 200, description = "the script of the /docs page", content_type = "text/javascript", body = String))
)]
pub(crate) async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")], SCRIPT)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page renders only what the document holds, through the DOM: no HTML from the
    /// document is ever parsed, and nothing is fetched from elsewhere.
    #[test]
    fn the_renderer_writes_text_only_and_fetches_only_this_server() {
        assert!(!SCRIPT.contains("innerHTML") && !SCRIPT.contains("outerHTML") && !SCRIPT.contains("eval("));
        assert!(!SCRIPT.contains("http://") && !SCRIPT.contains("https://"));
        assert!(SCRIPT.contains("fetch(\"/openapi.json\")"));
        assert!(PAGE.contains("<script src=\"/docs/render.js\"></script>"));
        assert!(!PAGE.contains("http://") && !PAGE.contains("https://"));
    }
}
