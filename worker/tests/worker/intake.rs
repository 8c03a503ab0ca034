//! The intake switch on the board: an operator pauses and resumes intake with a POST
//! that carries the page's CSRF token, and each action is written to the audit. (What
//! paused workers do is tested on two worker binaries: system-tests, `intake.rs`.)

use crate::board::{TOKEN, page, serve_board};
use crate::helpers::*;
use reqwest::StatusCode;
use shared::db::intake;
use sqlx::PgPool;
use std::net::SocketAddr;

/// The CSRF token in the board's intake form.
fn csrf_of(page: &str) -> String {
    let start = page
        .find("name=\"csrf\" value=\"")
        .expect("the intake form")
        + 19;
    page[start..start + 64].to_owned()
}

/// A form body of `fields` (their values need no escaping here: words and hex).
fn form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn post_form(addr: SocketAddr, fields: &[(&str, &str)]) -> reqwest::RequestBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(format!("http://{addr}/board/intake"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(fields))
}

/// Posts the intake form with `fields`, as a browser signed in with Basic would.
async fn post(addr: SocketAddr, fields: &[(&str, &str)]) -> reqwest::Response {
    post_form(addr, fields)
        .basic_auth("ops", Some(TOKEN))
        .send()
        .await
        .expect("the board answers")
}

async fn audit_rows(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as("SELECT action, address FROM ops_audit ORDER BY id")
        .fetch_all(pool)
        .await
        .expect("audit")
}

async fn is_paused(pool: &PgPool) -> bool {
    let mut conn = pool.acquire().await.expect("conn");
    intake::read(&mut conn).await.expect("read").paused
}

#[sqlx::test(migrations = false)]
async fn an_action_without_the_pages_csrf_token_is_refused_and_changes_nothing(pool: PgPool) {
    migrated(&pool).await;
    let addr = serve_board(&pool).await;
    let board = page(addr, "/board").await;
    assert!(board.contains("Pause intake"), "{board}");
    let good = csrf_of(&board);
    let mut forged = good.clone().into_bytes();
    forged[10] = if forged[10] == b'a' { b'b' } else { b'a' };
    let forged = String::from_utf8(forged).expect("hex");
    for fields in [
        vec![("action", "pause")],
        vec![("action", "pause"), ("csrf", "")],
        vec![("action", "pause"), ("csrf", forged.as_str())],
    ] {
        let refused = post(addr, &fields).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{fields:?}");
    }
    // Without the operator's token, not even the CSRF check is reached.
    let anonymous = post_form(addr, &[("action", "pause"), ("csrf", good.as_str())])
        .send()
        .await
        .expect("answer");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // An unknown action with a good token: refused too.
    let unknown = post(addr, &[("action", "drop-table"), ("csrf", &good)]).await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    assert!(!is_paused(&pool).await);
    assert!(audit_rows(&pool).await.is_empty());
}

#[sqlx::test(migrations = false)]
async fn pause_and_resume_from_the_board_are_written_to_the_audit(pool: PgPool) {
    migrated(&pool).await;
    let addr = serve_board(&pool).await;
    let csrf = csrf_of(&page(addr, "/board").await);
    let paused = post(addr, &[("action", "pause"), ("csrf", &csrf)]).await;
    assert_eq!(paused.status(), StatusCode::SEE_OTHER);
    assert_eq!(paused.headers()["location"], "/board");
    assert!(is_paused(&pool).await);
    let board = page(addr, "/board").await;
    assert!(
        board.contains("<span class=\"state failed\">paused</span> since"),
        "{board}"
    );
    assert!(board.contains("Resume intake"));
    assert!(
        board.contains("<td>pause</td><td class=\"mono\">127.0.0.1</td>"),
        "{board}"
    );

    let resumed = post(addr, &[("action", "resume"), ("csrf", &csrf_of(&board))]).await;
    assert_eq!(resumed.status(), StatusCode::SEE_OTHER);
    assert!(!is_paused(&pool).await);
    assert_eq!(
        audit_rows(&pool).await,
        [
            ("pause".to_owned(), "127.0.0.1".to_owned()),
            ("resume".to_owned(), "127.0.0.1".to_owned())
        ]
    );
}
