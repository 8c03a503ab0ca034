//! Strict reading of what the LLM wrote. Anything that is not one valid question is a
//! failure that may pass on the next attempt (models are not deterministic).

use serde::Deserialize;
use shared::domain::QuestionType;

/// The longest question we accept, in characters.
pub const MAX_QUESTION_CHARS: usize = 2_000;

/// A valid question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub text: String,
    pub question_type: QuestionType,
}

/// Why a reply was not a valid question. The text is for logs; it may quote the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the model's reply is not a valid question: {0}")]
pub struct InvalidOutput(pub String);

/// Extra fields are ignored: models add them, and the question is still whole.
#[derive(Deserialize)]
struct Reply {
    question_text: String,
    question_type: String,
}

/// Reads a JSON reply `{question_text, question_type}`.
pub fn parse_json(reply: &str) -> Result<Question, InvalidOutput> {
    // Some servers wrap JSON in a Markdown fence even when asked not to.
    let body = reply
        .trim()
        .trim_start_matches("```json")
        .trim_start_matches("```")
        .trim_end_matches("```")
        .trim();
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|err| InvalidOutput(format!("not JSON ({err})")))?;
    if !value.is_object() {
        return Err(InvalidOutput("not a JSON object".into()));
    }
    let reply: Reply = serde_json::from_value(value)
        .map_err(|err| InvalidOutput(format!("not the expected shape ({err})")))?;
    let question_type = reply
        .question_type
        .trim()
        .to_lowercase()
        .parse()
        .map_err(|_| InvalidOutput(format!("unknown question_type {:?}", reply.question_type)))?;
    validate(reply.question_text, question_type)
}

/// Reads a plain-text reply: the whole reply is the question, of the requested type.
pub fn parse_text(reply: &str, requested: QuestionType) -> Result<Question, InvalidOutput> {
    validate(reply.to_owned(), requested)
}

/// Drops the C0 and C1 control characters (and DEL), except `\n` and `\t`: PostgreSQL
/// cannot store NUL in `text`, and escape sequences would reach a client's terminal or
/// page. Applied before the length bound, so what is measured is what is stored.
fn strip_controls(text: &str) -> String {
    text.chars()
        .filter(|c| matches!(c, '\n' | '\t') || !c.is_control())
        .collect()
}

fn validate(text: String, question_type: QuestionType) -> Result<Question, InvalidOutput> {
    let text = strip_controls(&text);
    let text = text.trim();
    if text.is_empty() {
        return Err(InvalidOutput("empty question_text".into()));
    }
    let chars = text.chars().count();
    if chars > MAX_QUESTION_CHARS {
        return Err(InvalidOutput(format!(
            "question_text has {chars} characters, more than {MAX_QUESTION_CHARS}"
        )));
    }
    Ok(Question {
        text: text.to_owned(),
        question_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_json_reply_is_read() {
        let q =
            parse_json(r#"{"question_text": " What is a WAL? ", "question_type": "Technical"}"#)
                .expect("valid");
        assert_eq!(
            q,
            Question {
                text: "What is a WAL?".into(),
                question_type: QuestionType::Technical
            }
        );
        assert!(
            parse_json(
                "```json\n{\"question_text\": \"Why?\", \"question_type\": \"behavioral\"}\n```"
            )
            .is_ok()
        );
    }

    #[test]
    fn malformed_unknown_type_empty_and_overlong_replies_are_refused() {
        for bad in [
            "not json",
            r#"{"question_text": "Why?"}"#,
            r#"{"question_text": "Why?", "question_type": "trivia"}"#,
            r#"{"question_text": "   ", "question_type": "technical"}"#,
            r#"["Why?", "technical"]"#,
        ] {
            assert!(parse_json(bad).is_err(), "{bad:?} should be refused");
        }
        let long = format!(
            r#"{{"question_text": "{}", "question_type": "technical"}}"#,
            "x".repeat(MAX_QUESTION_CHARS + 1)
        );
        assert!(parse_json(&long).is_err());
    }

    #[test]
    fn control_characters_are_stripped_before_the_length_bound() {
        let q = parse_json(
            r#"{"question_text": "What is a\u0000b?\u001b[31m\u009b\r\n\tWhy?\u007f", "question_type": "technical"}"#,
        )
        .expect("valid once stripped");
        assert_eq!(q.text, "What is ab?[31m\n\tWhy?");
        // Controls do not count towards the bound: they are gone before it is applied.
        let padded = format!(
            r#"{{"question_text": "{}{}", "question_type": "technical"}}"#,
            "\\u0000".repeat(100),
            "x".repeat(MAX_QUESTION_CHARS)
        );
        assert_eq!(
            parse_json(&padded).expect("fits").text.chars().count(),
            MAX_QUESTION_CHARS
        );
        // Nothing but controls is an empty question.
        assert!(
            parse_json(r#"{"question_text": "\u0000\u0007", "question_type": "technical"}"#)
                .is_err()
        );
        // A lone surrogate escape is not valid JSON text for a Rust string.
        assert!(
            parse_json(r#"{"question_text": "\ud800?", "question_type": "technical"}"#).is_err()
        );
    }

    #[test]
    fn a_text_reply_takes_the_requested_type() {
        let q = parse_text("Tell me about a conflict.", QuestionType::Behavioral).expect("valid");
        assert_eq!(q.question_type, QuestionType::Behavioral);
        assert!(parse_text("  ", QuestionType::Behavioral).is_err());
    }
}
