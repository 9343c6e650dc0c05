//! The web console's files (`/console/`), embedded in the binary so that `cityhub serve`
//! serves them with no extra step and no network: the governance centre's screens work on a
//! closed network. The console is a client of the public HTTP API like any other; this file
//! only hands out its files, with a strict Content-Security-Policy.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::error::ApiError;

/// One embedded file: its path under `/console/`, its media type and its bytes.
struct Asset {
    path: &'static str,
    media_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! assets {
    ($(($path:literal, $media_type:expr)),* $(,)?) => {
        &[$(Asset {
            path: $path,
            media_type: $media_type,
            bytes: include_bytes!(concat!("../../console/", $path)),
        }),*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = assets![
    ("index.html", "text/html; charset=utf-8"),
    ("style.css", "text/css; charset=utf-8"),
    ("app.js", JS),
    ("api.js", JS),
    ("dom.js", JS),
    ("i18n.js", JS),
    ("sql.js", JS),
    ("chart.js", JS),
    ("workbench.js", JS),
    ("catalogue.js", JS),
    ("map.js", JS),
    ("kpi.js", JS),
    ("audit.js", JS),
    ("neijiang-counties.json", "application/json"),
    ("favicon.svg", "image/svg+xml"),
];

/// No inline script or style, nothing from another origin: a dataset description holding
/// `<script>` could not run even if a page wrote it as HTML (none does: every text from the
/// API is written with `textContent`). `blob:` is for downloads of query results.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; \
     manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /console`: the console lives under `/console/`, where its relative paths resolve.
pub async fn redirect() -> Redirect {
    Redirect::permanent("/console/")
}

/// `GET /console/`: the console's page.
pub async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /console/{file}`: one of the console's files. Paths the console routes itself
/// (`#/map`) never reach the server, so an unknown file is a 404.
pub async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some((index, asset)) = ASSETS.iter().enumerate().find(|(_, a)| a.path == path) else {
        return ApiError::not_found(format!("the console has no file {path:?}")).into_response();
    };
    let tag = &etags()[index];
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|value| value.as_bytes() == tag.as_bytes());
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.media_type)], asset.bytes).into_response()
    };
    let answer = response.headers_mut();
    answer.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    answer.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    answer.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    answer.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Revalidated on each load (a 304 costs a round trip on a LAN), so that a new binary's
    // console is never mixed with an old one's cached modules.
    answer.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(tag) {
        answer.insert(header::ETAG, value);
    }
    response
}

/// One entity tag per asset: a hash of its bytes, computed once.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| format!("\"{:016x}\"", fnv1a(asset.bytes)))
            .collect()
    })
}

/// FNV-1a: enough to tell two versions of a file apart; nothing here needs a secure hash.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(asset: &Asset) -> &'static str {
        std::str::from_utf8(asset.bytes).expect("console files are UTF-8")
    }

    #[test]
    fn every_module_the_page_imports_is_embedded() {
        // A module missing from ASSETS would load as a 404 and leave the console blank.
        for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            for line in text(asset).lines().filter(|l| l.starts_with("import ")) {
                let Some((_, target)) = line.rsplit_once("from ") else {
                    continue;
                };
                let target = target
                    .trim_matches(|c| c == '\'' || c == '"' || c == ';' || c == ' ')
                    .trim_start_matches("./");
                assert!(
                    ASSETS.iter().any(|a| a.path == target),
                    "{} imports {target}, which is not embedded",
                    asset.path
                );
            }
        }
    }

    #[test]
    fn nothing_is_loaded_from_another_origin_or_written_as_html() {
        for asset in ASSETS.iter().filter(|a| !a.path.ends_with(".json")) {
            // The SVG namespace is a name, not an address anything is fetched from.
            let code = text(asset).replace("http://www.w3.org/2000/svg", "");
            for needle in [
                "http://",
                "https://",
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "eval(",
            ] {
                assert!(!code.contains(needle), "{} contains {needle}", asset.path);
            }
        }
    }
}
