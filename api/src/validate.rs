//! Field checks shared by the handlers; each failure is a `422` naming the field.

use crate::error::ApiError;

/// A required text field: not blank, at most `max_chars` characters.
pub fn text<'a>(field: &str, value: &'a str, max_chars: usize) -> Result<&'a str, ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::field(field, "must not be empty"));
    }
    if value.chars().count() > max_chars {
        return Err(ApiError::field(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    Ok(value)
}

/// An optional text field: absent or blank is `None`, otherwise as [`text`].
pub fn optional_text<'a>(
    field: &str,
    value: Option<&'a str>,
    max_chars: usize,
) -> Result<Option<&'a str>, ApiError> {
    match value {
        Some(v) if !v.trim().is_empty() => text(field, v, max_chars).map(Some),
        _ => Ok(None),
    }
}

/// An email address, lower-cased. Deliberately simple (one `@`, a dotted domain, no
/// spaces): the real check is whether mail arrives, which is not ours to do here.
pub fn email(value: &str) -> Result<String, ApiError> {
    let value = value.trim();
    let valid = value.len() <= 254
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        && match value.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains("..")
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
            email(" Ada@Example.COM ").ok().as_deref(),
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
    fn blank_text_is_refused() {
        assert!(text("title", "  ", 10).is_err());
        assert!(text("title", "x".repeat(11).as_str(), 10).is_err());
        assert_eq!(optional_text("company", Some(" "), 10).ok(), Some(None));
    }
}
