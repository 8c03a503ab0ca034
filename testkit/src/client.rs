//! A user of the api, signed in over HTTP the way a client is: register, log in, then
//! the bearer token on every request. The end-to-end walkthrough (system tests'
//! `e2e.rs`) spells these steps out on purpose; everything else starts from here.

use anyhow::Context;
use serde_json::{Value, json};

/// The password every test user signs up with.
pub const PASSWORD: &str = "correct horse";

/// A signed-in user of the api at `base` (`http://host:port/api/v1`).
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub base: String,
    pub user_id: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl SignedIn {
    /// Registers `email` with [`PASSWORD`] and logs in.
    pub async fn register(addr: &str, email: &str) -> anyhow::Result<Self> {
        let base = format!("http://{addr}/api/v1");
        let http = reqwest::Client::new();
        let credentials = json!({"email": email, "password": PASSWORD});
        let registered: Value = http
            .post(format!("{base}/auth/register"))
            .json(&credentials)
            .send()
            .await?
            .error_for_status()
            .context("registering")?
            .json()
            .await?;
        let user_id = id(&registered)?;
        let login: Value = http
            .post(format!("{base}/auth/login"))
            .json(&credentials)
            .send()
            .await?
            .error_for_status()
            .context("logging in")?
            .json()
            .await?;
        let token = login["access_token"]
            .as_str()
            .context("no access_token in the login answer")?
            .to_owned();
        Ok(Self {
            base,
            user_id,
            token,
            http,
        })
    }

    /// Sends `body` with the token to `path` (under `/api/v1`) and returns the JSON
    /// answer; an error status is an error.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        Ok(self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("{method} {path}"))?
            .json()
            .await?)
    }

    /// Creates a job posting; its id.
    pub async fn job_posting(&self) -> anyhow::Result<String> {
        let posting = self
            .send(
                reqwest::Method::POST,
                "/job-postings",
                json!({"title": "Backend engineer", "company": "Acme", "description": "Own a durable job queue in Rust on PostgreSQL."}),
            )
            .await?;
        id(&posting)
    }

    /// Opens an active session on `job_posting`; its id.
    pub async fn session(&self, job_posting: &str) -> anyhow::Result<String> {
        let session = self
            .send(
                reqwest::Method::POST,
                "/sessions",
                json!({"job_posting_id": job_posting}),
            )
            .await?;
        id(&session)
    }
}

fn id(resource: &Value) -> anyhow::Result<String> {
    Ok(resource["id"]
        .as_str()
        .context("no id in the answer")?
        .to_owned())
}

/// A user registered and signed in at `addr`, with a job posting and one active
/// session: the bearer token and the session id. Panics on failure (for tests).
pub async fn signed_in_session(addr: &str, email: &str) -> (String, String) {
    let user = SignedIn::register(addr, email).await.expect("sign up");
    let posting = user.job_posting().await.expect("job posting");
    let session = user.session(&posting).await.expect("session");
    (user.token, session)
}

/// `GET url` with the bearer `token`: the answer's JSON, whatever its status. Panics on
/// a transport error or a body that is not JSON (for tests).
pub async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> Value {
    json_answer(http.get(url), token, url).await
}

/// `POST url` with the bearer `token` and `body`: the answer's JSON, whatever its
/// status. Panics like [`get_json`].
pub async fn post_json(http: &reqwest::Client, url: &str, token: &str, body: &Value) -> Value {
    json_answer(http.post(url).json(body), token, url).await
}

async fn json_answer(request: reqwest::RequestBuilder, token: &str, url: &str) -> Value {
    request
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|err| panic!("{url}: {err}"))
        .json()
        .await
        .unwrap_or_else(|err| panic!("{url}: the answer is not JSON: {err}"))
}
