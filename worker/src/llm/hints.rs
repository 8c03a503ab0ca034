//! What a refusing provider says about when to come back: `Retry-After` (seconds or an
//! HTTP date), `retry-after-ms`, and OpenAI's `x-ratelimit-reset-requests` /
//! `x-ratelimit-reset-tokens` (durations such as `1s`, `6m0s`, `20ms`).
//!
//! async-openai's error carries the status and the body, not the headers, so they are
//! read by [`HintedService`], a tower service around its reqwest transport, and handed
//! to the call that asked through a task-local slot ([`capture`]): concurrent calls of
//! one process never see each other's hints.

use async_openai::error::OpenAIError;
use async_openai::middleware::{HttpRequestFactory, ReqwestService};
use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use std::cell::Cell;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

tokio::task_local! {
    static HINT: Cell<Option<Duration>>;
}

/// Runs `call` (one request through a client built on [`HintedService`]) and returns
/// its result with the wait the provider asked for, if it refused with one.
pub async fn capture<T>(call: impl Future<Output = T>) -> (T, Option<Duration>) {
    HINT.scope(Cell::new(None), async {
        let result = call.await;
        (result, HINT.with(Cell::take))
    })
    .await
}

/// The wait a refusal asks for: only a `429` or a `503` is read (a hint on another
/// status, or on a success, is not a request to wait). The explicit `retry-after-ms`
/// and `Retry-After` win; else the later of the rate limits' resets.
pub fn from_response(status: u16, headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if status != 429 && status != 503 {
        return None;
    }
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        return seconds(ms / 1000.0);
    }
    if let Some(value) = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()) {
        return retry_after(value, now);
    }
    if status != 429 {
        return None;
    }
    ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .into_iter()
        .filter_map(|name| header(name).and_then(reset_duration))
        .max()
}

/// `Retry-After`: delay-seconds (fractions tolerated) or an HTTP date.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return seconds(secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A reset as OpenAI writes it: numbers with units `h`, `m`, `s`, `ms`, concatenated
/// (`1m30.5s`); a bare number is seconds.
pub fn reset_duration(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if let Ok(secs) = value.parse::<f64>() {
        return seconds(secs);
    }
    let mut total = 0.0;
    let mut rest = value;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&len| len > 0)?;
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let (unit, scale) = [("ms", 0.001), ("h", 3600.0), ("m", 60.0), ("s", 1.0)]
            .into_iter()
            .find(|(unit, _)| rest.starts_with(unit))?;
        total += number * scale;
        rest = &rest[unit.len()..];
    }
    seconds(total)
}

fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

/// async-openai's plain reqwest transport, reading the hint of each refusal into the
/// slot of the [`capture`] around the call.
#[derive(Debug, Clone)]
pub struct HintedService(pub ReqwestService);

impl tower::Service<HttpRequestFactory> for HintedService {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = BoxFuture<'static, Result<reqwest::Response, OpenAIError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequestFactory) -> Self::Future {
        let sent = self.0.call(request);
        Box::pin(async move {
            let response = sent.await?;
            let hint = from_response(
                response.status().as_u16(),
                response.headers(),
                SystemTime::now(),
            );
            // Outside a capture (no caller asked) there is nowhere to put it.
            let _ = HINT.try_with(|slot| slot.set(hint));
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).expect("header"));
        }
        map
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_784_000_000);
        assert_eq!(retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(" 1.5 ", now), Some(Duration::from_millis(1500)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(
            retry_after(&past, now),
            Some(Duration::ZERO),
            "a past date: now"
        );
        assert_eq!(retry_after("-1", now), None);
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn resets_read_openais_durations() {
        assert_eq!(reset_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(reset_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(reset_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(
            reset_duration("1m30.5s"),
            Some(Duration::from_millis(90_500))
        );
        assert_eq!(reset_duration("1h2m"), Some(Duration::from_secs(3720)));
        assert_eq!(reset_duration("0.25"), Some(Duration::from_millis(250)));
        for bad in ["", "s", "1x", "1.2.3s", "m5"] {
            assert_eq!(reset_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_a_429_or_a_503_asks_for_a_wait() {
        let now = SystemTime::now();
        let hinted = headers(&[("retry-after", "3")]);
        assert_eq!(
            from_response(429, &hinted, now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            from_response(503, &hinted, now),
            Some(Duration::from_secs(3))
        );
        for status in [200, 500, 502, 400] {
            assert_eq!(from_response(status, &hinted, now), None, "{status}");
        }
        let resets = headers(&[
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        assert_eq!(
            from_response(429, &resets, now),
            Some(Duration::from_secs(360)),
            "the later reset"
        );
        assert_eq!(from_response(503, &resets, now), None, "resets are a 429's");
        let both = headers(&[("retry-after", "2"), ("retry-after-ms", "250")]);
        assert_eq!(
            from_response(429, &both, now),
            Some(Duration::from_millis(250))
        );
        assert_eq!(from_response(429, &HeaderMap::new(), now), None);
    }
}
