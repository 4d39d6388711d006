//! The console's stylesheet and script, built into the binary: no build step,
//! nothing from a CDN, and the CSP can stay `default-src 'self'`.

use poem::http::StatusCode;
use poem::web::Path;
use poem::{Response, handler};

const ASSETS: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../../templates/console/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("../../templates/console/console.js"),
    ),
    (
        "member.js",
        "text/javascript; charset=utf-8",
        include_str!("../../templates/console/member.js"),
    ),
];

#[handler]
pub async fn serve(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(asset, _, _)| *asset == name) {
        Some((_, content_type, text)) => {
            Response::builder().content_type(*content_type).body(*text)
        }
        None => Response::builder().status(StatusCode::NOT_FOUND).finish(),
    }
}
