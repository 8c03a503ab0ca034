//! Field checks shared by the handlers; each failure is a `422` naming the field.
//!
//! The OpenAPI document states the same checks as `pattern`s in the request bodies'
//! `#[schema]` attributes (`routes/*.rs`). utoipa takes only a string literal there, so
//! each field spells its pattern out, and nothing here repeats them: change a check
//! here and the patterns of the fields it serves together.

use crate::error::ApiError;

/// A required text field: not blank. Its length is bounded only by the 256 KiB body
/// limit: what reaches the model is cut to a budget by the worker (`worker/src/prompt.rs`),
/// so a long resume is the worker's to shorten, never the client's error.
pub fn text<'a>(field: &str, value: &'a str) -> Result<&'a str, ApiError> {
    no_nul(field, value)?;
    if value.trim().is_empty() {
        return Err(ApiError::field(field, "must not be empty"));
    }
    Ok(value)
}

/// An optional text field: absent or blank is `None`, otherwise as [`text`].
pub fn optional_text<'a>(field: &str, value: Option<&'a str>) -> Result<Option<&'a str>, ApiError> {
    match value {
        Some(v) if !v.trim().is_empty() => text(field, v).map(Some),
        _ => Ok(None),
    }
}

/// PostgreSQL text cannot hold NUL: refuse it as bad input, never let it reach SQL.
fn no_nul(field: &str, value: &str) -> Result<(), ApiError> {
    if value.contains('\0') {
        Err(ApiError::field(
            field,
            "must not contain NUL (\\u0000) characters",
        ))
    } else {
        Ok(())
    }
}

/// The longest email address accepted (RFC 5321's path limit).
pub const MAX_EMAIL_CHARS: usize = 254;

/// An email address, lower-cased. Deliberately simple (one `@`, a dotted domain of
/// non-empty labels, no spaces or control characters; the `pattern` of
/// `RegisterRequest::email` says the same): the real check is whether mail arrives,
/// which is not ours to do here.
pub fn email(value: &str) -> Result<String, ApiError> {
    let plain = |c: char| c != '@' && !c.is_whitespace() && !c.is_control();
    let valid = value.chars().count() <= MAX_EMAIL_CHARS
        && match value.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && local.chars().all(plain)
                    && domain.contains('.')
                    && domain
                        .split('.')
                        .all(|label| !label.is_empty() && label.chars().all(plain))
            }
            None => false,
        };
    if valid {
        Ok(value.to_lowercase())
    } else {
        Err(ApiError::field("email", "must be a valid email address"))
    }
}

/// A password: 8 to 1,024 characters (the upper bound keeps hashing cheap to refuse).
pub fn password(value: &str) -> Result<&str, ApiError> {
    match value.chars().count() {
        0..8 => Err(ApiError::field("password", "must be at least 8 characters")),
        8..=1024 => Ok(value),
        _ => Err(ApiError::field(
            "password",
            "must be at most 1024 characters",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked_and_lower_cased() {
        assert_eq!(
            email("Ada@Example.COM").ok().as_deref(),
            Some("ada@example.com")
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "ada@@example.com",
            "ada@example..com",
            " ada@example.com",
            "ada@exa\u{85}mple.com",
        ] {
            assert!(email(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn passwords_need_eight_characters() {
        assert!(password("1234567").is_err());
        assert!(password("12345678").is_ok());
        assert!(password(&"x".repeat(1025)).is_err());
    }

    #[test]
    fn nul_characters_are_refused() {
        assert!(text("title", "a\0b").is_err());
        assert!(optional_text("company", Some("\0")).is_err());
        assert!(email("a\0@example.com").is_err());
    }

    #[test]
    fn blank_text_is_refused() {
        assert!(text("title", "  ").is_err());
        assert!(text("title", "x".repeat(200_000).as_str()).is_ok());
        assert_eq!(optional_text("company", Some(" ")).ok(), Some(None));
    }
}
