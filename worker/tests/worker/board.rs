//! The queue board: off without OPS_TOKEN, closed to anyone without it, and with it
//! the counts, the list and one job's page tell the truth about known jobs, with every
//! value escaped. The states are made by hand (apalis' columns set in SQL) on a board
//! served alone, so that no worker moves them while they are read; the worker's own
//! ops listener serves the same router, as the first tests show.

use crate::helpers::*;
use reqwest::{Response, StatusCode};
use shared::config::Secret;
use shared::domain::OperationId;
use sqlx::PgPool;
use std::net::SocketAddr;
use std::time::Duration;

pub const TOKEN: &str = "board-test-token-0123456789";

/// A last error that would run a script if the board printed it as it is.
const HOSTILE_ERROR: &str = "<script>alert('x')</script> & the model said \"no\"";

fn job_id(op: OperationId) -> String {
    ulid::Ulid(op.0.as_u128()).to_string()
}

enum Auth<'a> {
    None,
    Bearer(&'a str),
    Basic(&'a str, &'a str),
}

async fn get(addr: SocketAddr, path: &str, auth: Auth<'_>) -> Response {
    let request = reqwest::Client::new().get(format!("http://{addr}{path}"));
    let request = match auth {
        Auth::None => request,
        Auth::Bearer(token) => request.bearer_auth(token),
        Auth::Basic(user, password) => request.basic_auth(user, Some(password)),
    };
    request.send().await.expect("the board answers")
}

/// A page read with the token, which must answer 200.
pub async fn page(addr: SocketAddr, path: &str) -> String {
    let response = get(addr, path, Auth::Bearer(TOKEN)).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .expect("ascii");
    assert!(csp.starts_with("default-src 'none'"), "no script: {csp}");
    response.text().await.expect("body")
}

/// The number on the board's tile for `state`.
fn count(page: &str, state: &str) -> i64 {
    let tile = &page[page
        .find(&format!("id=\"count-{state}\""))
        .unwrap_or_else(|| panic!("a tile for {state}"))..];
    let start = tile.find("<b>").expect("<b>") + 3;
    let end = tile.find("</b>").expect("</b>");
    tile[start..end].parse().expect("a number")
}

/// Jobs listed on a page.
fn listed(page: &str) -> usize {
    page.matches("href=\"/board/jobs/").count()
}

/// The board router alone, as the worker merges it, on a listener of its own.
pub async fn serve_board(pool: &PgPool) -> SocketAddr {
    let config = config(|c| c.ops_token = Some(Secret::new(TOKEN)));
    let router = worker::board::router(pool.clone(), &config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    addr
}

async fn set(pool: &PgPool, op: OperationId, assignments: &'static str) {
    let sql = format!("UPDATE apalis.jobs SET {assignments} WHERE id = $1");
    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(job_id(op))
        .execute(pool)
        .await
        .unwrap_or_else(|err| panic!("{assignments}: {err}"));
    assert_eq!(done.rows_affected(), 1, "{assignments}");
}

#[sqlx::test(migrations = false)]
async fn without_an_ops_token_the_board_is_not_there(pool: PgPool) {
    migrated(&pool).await;
    let worker = RunningWorker::start(&pool, config(|_| {})).await;
    let addr = worker.metrics_addr;
    for path in [
        "/board",
        "/board?state=done",
        "/board/jobs/01KB0000000000000000000000",
    ] {
        assert_eq!(
            get(addr, path, Auth::None).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
        assert_eq!(
            get(addr, path, Auth::Bearer(TOKEN)).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let empty = config(|c| c.ops_token = Some(Secret::new("")));
    assert!(empty.ops_token().is_none(), "empty is unset");
    assert_eq!(
        get(addr, "/healthz", Auth::None).await.status(),
        StatusCode::OK
    );
    worker.stop().await;
}

#[sqlx::test(migrations = false)]
async fn the_worker_serves_the_board_to_the_token_alone(pool: PgPool) {
    migrated(&pool).await;
    let (user, session) = session(&pool, 1).await;
    let worker =
        RunningWorker::start(&pool, config(|c| c.ops_token = Some(Secret::new(TOKEN)))).await;
    let addr = worker.metrics_addr;
    let op = enqueue(&pool, user, session, 5).await;
    finished(&pool, op).await;
    // The operation commits before apalis marks its job Done.
    assert_eq!(settled_jobs(&pool).await, ["Done"]);

    for path in [
        "/board",
        &format!("/board/jobs/{}", job_id(op)),
        "/board/jobs/nope",
    ] {
        for auth in [
            Auth::None,
            Auth::Bearer("board-test-token-012345678"),
            Auth::Bearer("wrong-token-of-the-same-len"),
            Auth::Basic("ops", "wrong-token-of-the-same-len"),
            Auth::Basic(TOKEN, ""),
        ] {
            let response = get(addr, path, auth).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(
                response.headers()["www-authenticate"],
                "Basic realm=\"queue board\"",
                "a browser asks for the token"
            );
            let body = response.text().await.expect("body");
            assert!(!body.contains(&job_id(op)), "nothing of the queue shows");
        }
    }
    // Bearer for scripts, Basic with any user name for a browser.
    for auth in [
        Auth::Bearer(TOKEN),
        Auth::Basic("ops", TOKEN),
        Auth::Basic("", TOKEN),
    ] {
        let response = get(addr, "/board", auth).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.text().await.expect("body");
        assert!(body.contains(&job_id(op)) && body.contains(&op.to_string()));
        assert_eq!(count(&body, "done"), 1);
        // This worker, alive.
        assert!(body.contains(worker::queue::worker_name_prefix()));
    }
    // With the provider state of its last beat (one comes every 2 s): no cap set, its
    // breaker closed.
    testkit::eventually(
        "the worker's provider state",
        Duration::from_secs(30),
        || async {
            let body = get(addr, "/board", Auth::Bearer(TOKEN))
                .await
                .text()
                .await
                .expect("body");
            (body.contains("0 / no cap<") && body.contains(">closed<")).then_some(())
        },
    )
    .await;
    worker.stop().await;
}

#[sqlx::test(migrations = false)]
async fn counts_list_and_job_page_tell_the_truth_about_known_jobs(pool: PgPool) {
    migrated(&pool).await;
    let fixtures = sessions(&pool, 9).await;
    let mut ops = Vec::new();
    for (user, session) in &fixtures {
        ops.push(enqueue(&pool, *user, *session, 5).await);
    }
    // Behind the first operation of the first session: held at enqueue.
    let held = enqueue(&pool, fixtures[0].0, fixtures[0].1, 5).await;
    // A worker that holds the running job (jobs.lock_by refers to it).
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen, started_at)
         VALUES ('board-test-worker', 'question_generation', 'PostgresStorage', '', now(), now())",
    )
    .execute(&pool)
    .await
    .expect("worker row");
    // Its provider state as its last beat published it: two calls of a share of three,
    // its breaker open.
    sqlx::query(
        "INSERT INTO worker_state
             (worker_id, version, git_commit, cap_share, in_flight, breaker_open)
         VALUES ('board-test-worker', '0.0.9', 'f00dcafe', 3, 2, true)",
    )
    .execute(&pool)
    .await
    .expect("provider state");
    let [
        pending_a,
        pending_b,
        scheduled,
        running,
        retrying,
        done_a,
        done_b,
        failed,
        killed,
    ] = ops[..]
    else {
        panic!("nine operations")
    };
    set(&pool, scheduled, "run_at = now() + interval '1 hour'").await;
    set(
        &pool,
        running,
        "status = 'Running', attempts = 1, lock_by = 'board-test-worker', lock_at = now()",
    )
    .await;
    set(
        &pool,
        retrying,
        "status = 'Failed', attempts = 2, last_result = '{\"Err\": \"timed out\"}'",
    )
    .await;
    for done in [done_a, done_b] {
        set(
            &pool,
            done,
            "status = 'Done', attempts = 1, done_at = now(), last_result = '{\"Ok\": null}'",
        )
        .await;
    }
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Failed', attempts = 5, done_at = now(),
                lock_by = 'board-test-worker', last_result = jsonb_build_object('Err', $2::text)
         WHERE id = $1",
    )
    .bind(job_id(failed))
    .bind(format!("{HOSTILE_ERROR}\n{}", "more detail ".repeat(40)))
    .execute(&pool)
    .await
    .expect("failed");
    sqlx::query(
        "UPDATE operations SET status = 'failed', attempts = 5, error_message = $2 WHERE id = $1",
    )
    .bind(failed)
    .bind("<b>The question could not be generated.</b>")
    .execute(&pool)
    .await
    .expect("operation failed");
    set(
        &pool,
        killed,
        "status = 'Killed', done_at = now(), last_result = '{\"Err\": \"Cancelled by its owner.\"}'",
    )
    .await;

    let addr = serve_board(&pool).await;
    let board = page(addr, "/board").await;
    for (state, expected) in [
        ("all", 10),
        ("pending", 2),
        ("held", 1),
        ("scheduled", 1),
        ("running", 1),
        ("retrying", 1),
        ("done", 2),
        ("failed", 1),
        ("killed", 1),
    ] {
        assert_eq!(count(&board, state), expected, "{state}");
    }
    assert_eq!(listed(&board), 10);
    assert!(board.contains("held until released"));
    assert!(board.contains("board-test-worker"));
    assert!(board.contains(">2 / 3<"), "its calls and share");
    assert!(board.contains("open: probing"), "its breaker");
    assert!(board.contains("0.0.9 (commit f00dcafe)"), "its build");
    // The list shows the start of the error, escaped.
    assert!(!board.contains("<script>"), "no markup from the database");
    assert!(board.contains(
        "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; the model said &quot;no&quot;"
    ));
    assert!(board.contains('…'), "a long error is cut in the list");

    // The filter: only the jobs of one state.
    for (state, wanted) in [
        ("pending", vec![pending_a, pending_b]),
        ("held", vec![held]),
        ("done", vec![done_a, done_b]),
        ("failed", vec![failed]),
        ("running", vec![running]),
    ] {
        let filtered = page(addr, &format!("/board?state={state}")).await;
        assert_eq!(listed(&filtered), wanted.len(), "{state}");
        for op in wanted {
            assert!(filtered.contains(&job_id(op)), "{state}: {op}");
        }
        assert!(!filtered.contains(&job_id(killed)), "{state}");
    }
    assert_eq!(listed(&page(addr, "/board?state=").await), 10, "empty: all");
    let unknown = get(addr, "/board?state=%3Cscript%3E", Auth::Bearer(TOKEN)).await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    assert!(!unknown.text().await.expect("body").contains("<script>"));

    // One job: its attempts, its whole last error (escaped), its operation.
    let job = page(addr, &format!("/board/jobs/{}", job_id(failed))).await;
    assert!(job.contains("5 of 5"), "attempts");
    assert!(!job.contains("<script>") && !job.contains("<b>The"));
    assert!(job.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(
        job.contains(&"more detail ".repeat(40).trim_end().to_owned()),
        "all of it"
    );
    assert!(job.contains(&failed.to_string()));
    assert!(job.contains("&lt;b&gt;The question could not be generated.&lt;/b&gt;"));
    assert!(job.contains("<dt>Status</dt><dd>failed</dd>"));
    assert!(job.contains("board-test-worker"));
    let job = page(addr, &format!("/board/jobs/{}", job_id(retrying))).await;
    assert!(job.contains("2 of 5") && job.contains("timed out") && job.contains("retrying"));
    // A job whose operation is gone still shows.
    sqlx::query("DELETE FROM operations WHERE id = $1")
        .bind(killed)
        .execute(&pool)
        .await
        .expect("delete");
    let job = page(addr, &format!("/board/jobs/{}", job_id(killed))).await;
    assert!(job.contains("Cancelled by its owner.") && job.contains("Gone"));
}

#[sqlx::test(migrations = false)]
async fn unknown_and_garbage_job_ids_are_not_found_never_an_error(pool: PgPool) {
    migrated(&pool).await;
    let addr = serve_board(&pool).await;
    let long = "x".repeat(2_000);
    for (id, expected) in [
        // A well-formed id of no job.
        (ulid::Ulid::generate().to_string(), StatusCode::NOT_FOUND),
        (OperationId::new().to_string(), StatusCode::NOT_FOUND),
        ("not-a-job".to_owned(), StatusCode::NOT_FOUND),
        (
            "%27%3B%20DROP%20TABLE%20apalis.jobs%3B--".to_owned(),
            StatusCode::NOT_FOUND,
        ),
        ("%3Cscript%3E".to_owned(), StatusCode::NOT_FOUND),
        ("%00".to_owned(), StatusCode::NOT_FOUND),
        (long, StatusCode::NOT_FOUND),
        // Not UTF-8 once decoded: the path itself is refused.
        ("%FF%FE".to_owned(), StatusCode::BAD_REQUEST),
    ] {
        let response = get(addr, &format!("/board/jobs/{id}"), Auth::Bearer(TOKEN)).await;
        assert_eq!(response.status(), expected, "{id}");
        assert!(!response.text().await.expect("body").contains("<script>"));
    }
    // Unauthenticated, a garbage id is refused before it is looked at.
    assert_eq!(
        get(addr, "/board/jobs/%FF", Auth::None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let table: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(&pool)
        .await
        .expect("the table is still there");
    assert_eq!(table, 0);
}

#[sqlx::test(migrations = false)]
async fn the_board_lists_the_last_days_top_users_by_tokens(pool: PgPool) {
    migrated(&pool).await;
    let fixtures = sessions(&pool, 3).await;
    // Ada: 2 questions of 300 and 200 tokens; Grace: 1 of 1,000, and one of 5,000 two
    // days ago (outside the window); Lin: 1 without usage (an unpriced provider).
    let questions: [(usize, Option<i64>, i32); 5] = [
        (0, Some(300), 0),
        (0, Some(200), 0),
        (1, Some(1_000), 0),
        (1, Some(5_000), 48),
        (2, None, 0),
    ];
    for (who, tokens, hours_ago) in questions {
        let metadata = match tokens {
            Some(total) => serde_json::json!({"usage": {"total_tokens": total}}),
            None => serde_json::json!({}),
        };
        sqlx::query(
            "INSERT INTO session_messages (id, session_id, message_type, content, question_type, metadata, created_at)
             VALUES (gen_random_uuid(), $1, 'question', 'Why?', 'technical', $2,
                     now() - make_interval(hours => $3))",
        )
        .bind(fixtures[who].1)
        .bind(metadata)
        .bind(hours_ago)
        .execute(&pool)
        .await
        .expect("a question");
    }
    let addr = serve_board(&pool).await;
    let board = page(addr, "/board").await;
    let section = &board[board.find("Top users by tokens").expect("the section")..];
    let rows: Vec<&str> = section.split("<tr>").skip(2).take(3).collect();
    let expect = [
        (fixtures[1].0, 1, 1_000),
        (fixtures[0].0, 2, 500),
        (fixtures[2].0, 1, 0),
    ];
    for (row, (user, questions, tokens)) in rows.iter().zip(expect) {
        assert!(row.contains(&user.0.to_string()), "{row}");
        assert!(
            row.contains(&format!(
                "<td class=\"num\">{questions}</td><td class=\"num\">{tokens}</td>"
            )),
            "{row}"
        );
    }
}

#[sqlx::test(migrations = false)]
async fn a_job_is_found_by_its_operation_session_or_user(pool: PgPool) {
    migrated(&pool).await;
    let fixtures = sessions(&pool, 3).await;
    // Two operations on the first session (the second held behind the first), one on
    // each of the others.
    let ops = enqueue_on(&pool, &fixtures, 1).await;
    let second = enqueue(&pool, fixtures[0].0, fixtures[0].1, 5).await;
    let addr = serve_board(&pool).await;
    let shows = |page: &str, op: &OperationId| page.contains(&job_id(*op));

    let by_session = page(addr, &format!("/board?q={}", fixtures[0].1)).await;
    assert_eq!(listed(&by_session), 2, "{by_session}");
    assert!(shows(&by_session, &ops[0]) && shows(&by_session, &second));
    let by_user = page(
        addr,
        &format!("/board?q={}&type=question_generation", fixtures[1].0),
    )
    .await;
    assert_eq!(listed(&by_user), 1);
    assert!(shows(&by_user, &ops[1]));
    let by_operation = page(addr, &format!("/board?q={}", ops[2])).await;
    assert_eq!(listed(&by_operation), 1);
    assert!(shows(&by_operation, &ops[2]));
    // With the state filter too: the first session's second job is held.
    let held = page(addr, &format!("/board?q={}&state=held", fixtures[0].1)).await;
    assert_eq!(listed(&held), 1);
    assert!(shows(&held, &second));
    let nobody = page(addr, &format!("/board?q={}", uuid::Uuid::new_v4())).await;
    assert_eq!(listed(&nobody), 0);

    for bad in [
        "/board?q=not-an-id",
        "/board?type=payroll",
        "/board?before=%00x",
    ] {
        let response = get(addr, bad, Auth::Bearer(TOKEN)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[sqlx::test(migrations = false)]
async fn a_full_page_links_to_the_older_jobs_and_the_last_page_does_not(pool: PgPool) {
    migrated(&pool).await;
    let ops = one_each(&pool, 55).await;
    let addr = serve_board(&pool).await;
    let first = page(addr, "/board").await;
    assert_eq!(listed(&first), 50);
    let link = first
        .split("id=\"older\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a link to the older jobs")
        .replace("&amp;", "&");
    let older = page(addr, &link).await;
    assert_eq!(listed(&older), 5, "{older}");
    assert!(
        !older.contains("id=\"older\""),
        "the last page links nowhere"
    );
    // The oldest five are the first five enqueued, and no job is on both pages.
    for op in &ops[..5] {
        assert!(older.contains(&job_id(*op)) && !first.contains(&job_id(*op)));
    }
}
