//! The OpenAPI document parses and lists every path of the contract.

use crate::helpers::TestApp;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

const CONTRACT: &[(&str, &str)] = &[
    ("post", "/api/v1/auth/register"),
    ("post", "/api/v1/auth/login"),
    ("put", "/api/v1/resume"),
    ("post", "/api/v1/job-postings"),
    ("get", "/api/v1/job-postings/{id}"),
    ("delete", "/api/v1/job-postings/{id}"),
    ("post", "/api/v1/sessions"),
    ("get", "/api/v1/sessions"),
    ("get", "/api/v1/sessions/{id}"),
    ("patch", "/api/v1/sessions/{id}"),
    ("post", "/api/v1/sessions/{id}/generate-question"),
    ("get", "/api/v1/operations/{id}"),
    ("get", "/api/v1/sessions/{id}/messages"),
    ("post", "/api/v1/sessions/{id}/answers"),
    ("post", "/api/v1/sessions/{id}/answers/{answer_id}/feedback"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

#[sqlx::test(migrations = false)]
async fn the_openapi_document_lists_every_contract_path_with_bearer_security(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let response = app.get("/api/v1/openapi.json", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = response.json().await.expect("JSON");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for (method, path) in CONTRACT {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for schema in [
        "ErrorBody",
        "Session",
        "Operation",
        "Message",
        "JobPosting",
        "User",
        "Resume",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema} missing"
        );
    }
    // FEEDBACK_EXISTS names the existing operation in the error body.
    assert!(
        doc["components"]["schemas"]["ErrorDetail"]["properties"]["operation_id"].is_object(),
        "ErrorDetail.operation_id missing"
    );
    let docs = app.get("/docs", None).await;
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(
        docs.text()
            .await
            .expect("html")
            .contains("/api/v1/openapi.json")
    );
}
