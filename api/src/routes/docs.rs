//! The OpenAPI document, generated from the handlers' annotations, and a page to read it.

use crate::error::{ErrorBody, ErrorDetail};
use crate::routes::{
    auth, feedback, generate, health, job_postings, messages, operations, resume,
    session_operations, sessions, users,
};
use axum::response::Html;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The api's OpenAPI 3 document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Interview service API", description = "Durable, asynchronous question generation and answer feedback for AI mock interviews.", license(name = "MIT", identifier = "MIT")),
    paths(
        auth::register, auth::login, auth::refresh,
        users::me, users::delete_me,
        resume::put_resume, resume::get_resume,
        job_postings::create, job_postings::list, job_postings::get, job_postings::update, job_postings::delete,
        sessions::create, sessions::list, sessions::get, sessions::update, sessions::delete,
        generate::generate_question, feedback::request_feedback,
        operations::get, operations::cancel, session_operations::list,
        messages::list, messages::answer,
        health::healthz, health::readyz, health::metrics,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerAuth),
)]
#[derive(Debug)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".to_owned());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The document as pretty JSON.
pub fn openapi_document() -> Result<String, serde_json::Error> {
    ApiDoc::openapi().to_pretty_json()
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

/// `GET /docs`: an interactive page (Scalar, loaded from its CDN) over our document.
///
/// The bundle is pinned to one version and carries a subresource-integrity hash, so
/// the CDN can neither move it nor alter it. The CDN serves npm package files
/// verbatim, so to bump the version, hash the same file from the npm package:
///   cd /tmp && npm pack @scalar/api-reference@<version> && tar xzf scalar-api-reference-<version>.tgz
///   openssl dgst -sha384 -binary package/dist/browser/standalone.js | openssl base64 -A
/// and put the version in the URL and `sha384-<that>` in `integrity` below.
pub async fn docs_page() -> Html<&'static str> {
    Html(
        r#"<!doctype html>
<html>
<head>
  <title>Interview service API</title>
  <meta charset="utf-8" />
  <meta name="viewport" content="width=device-width, initial-scale=1" />
</head>
<body>
  <script id="api-reference" data-url="/api/v1/openapi.json"></script>
  <script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference@1.76.0/dist/browser/standalone.js"
          integrity="sha384-oH1C0RwqcwbVXkC+r8A+4qRoyEUQdtxAzOwumkxZtQBBcsy61FOoPt7B50OVJYYQ"
          crossorigin="anonymous"></script>
  <noscript>The machine-readable document is at <a href="/api/v1/openapi.json">/api/v1/openapi.json</a>.</noscript>
</body>
</html>"#,
    )
}
