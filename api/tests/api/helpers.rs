//! `TestApp`: the real api server on a port-0 listener over the test's own database,
//! driven over HTTP like a client would.

use api::long_poll::Waiters;
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: Client,
    pub pool: PgPool,
    pub waiters: Arc<Waiters>,
    pub guards: Arc<api::state::Guards>,
    pub intake: Arc<api::intake::IntakeView>,
    _shutdown: oneshot::Sender<()>,
}

/// A registered user with a token: testkit's client, the one way every test signs in.
pub use testkit::client::SignedIn as User;

impl TestApp {
    pub async fn spawn(pool: PgPool) -> Self {
        Self::spawn_with(pool, |_| {}).await
    }

    pub async fn spawn_with(
        pool: PgPool,
        configure: impl FnOnce(&mut api::config::ApiConfig),
    ) -> Self {
        shared::tls::install_crypto_provider();
        shared::db::migrate(&pool).await.expect("migrate");
        let mut config = api::config::ApiConfig::for_tests("postgres://unused@127.0.0.1/unused");
        configure(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let app = api::App::new(&config, pool.clone());
        let waiters = app.waiters();
        let guards = app.guards();
        let intake = app.intake();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            app.serve(listener, shutdown).await.expect("server");
        });
        Self {
            addr,
            client: Client::new(),
            pool,
            waiters,
            guards,
            intake,
            _shutdown: tx,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn request(&self, method: Method, path: &str, user: Option<&User>) -> RequestBuilder {
        let builder = self.client.request(method, self.url(path));
        match user {
            Some(user) => builder.bearer_auth(&user.token),
            None => builder,
        }
    }

    /// `method path` as `user`, with `body` as JSON when given.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        user: Option<&User>,
        body: Option<Value>,
    ) -> Response {
        let request = self.request(method.clone(), path, user);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        request
            .send()
            .await
            .unwrap_or_else(|err| panic!("{method} {path}: {err}"))
    }

    pub async fn post(&self, path: &str, user: Option<&User>, body: Value) -> Response {
        self.send(Method::POST, path, user, Some(body)).await
    }

    pub async fn get(&self, path: &str, user: Option<&User>) -> Response {
        self.send(Method::GET, path, user, None).await
    }

    /// `GET path` as `user`: the answer's JSON, whatever its status.
    pub async fn get_json(&self, path: &str, user: Option<&User>) -> Value {
        self.get(path, user).await.json().await.expect("json")
    }

    pub async fn delete(&self, path: &str, user: Option<&User>) -> Response {
        self.send(Method::DELETE, path, user, None).await
    }

    /// A user signed up and logged in over HTTP.
    pub async fn register(&self, email: &str) -> User {
        User::register(&self.addr.to_string(), email)
            .await
            .expect("sign up")
    }

    pub async fn create_posting(&self, user: &User) -> String {
        user.job_posting().await.expect("job posting")
    }

    pub async fn create_session(&self, user: &User) -> String {
        let posting = self.create_posting(user).await;
        user.session(&posting).await.expect("session")
    }

    pub async fn generate(&self, user: &User, session: &str) -> Response {
        self.post(
            &format!("/api/v1/sessions/{session}/generate-question"),
            Some(user),
            json!({}),
        )
        .await
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }
}

/// A question message in `session`, as a worker's commit would leave it (no worker runs
/// in these tests); its id.
pub async fn question_in(app: &TestApp, session: &str) -> String {
    let id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO session_messages (id, session_id, message_type, content, question_type)
         VALUES (gen_random_uuid(), $1::uuid, 'question', 'Why Rust?', 'technical')
         RETURNING id",
    )
    .bind(session)
    .fetch_one(&app.pool)
    .await
    .expect("a question");
    id.to_string()
}

pub async fn id_of(response: Response) -> String {
    let body: Value = response.json().await.expect("json");
    body["id"].as_str().expect("id").to_owned()
}

/// Asserts the contract's `422 VALIDATION_ERROR`, and returns its body.
pub async fn assert_invalid(response: Response) -> Value {
    assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    )
    .await
}

/// Asserts the contract's error body with `code`, and returns it.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let body: Value = response.json().await.expect("error body is JSON");
    assert_eq!(body["detail"]["code"], code, "body: {body}");
    assert!(
        body["detail"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "body: {body}"
    );
    body
}

/// Asserts a per-user rate limit's refusal: `429 TOO_MANY_REQUESTS` with a
/// `Retry-After` within the minute.
pub async fn assert_limited_for_the_minute(response: Response) {
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        retry_after.is_some_and(|s| (1..=60).contains(&s)),
        "{retry_after:?}"
    );
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS").await;
}
