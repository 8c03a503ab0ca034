//! Strict reading of what the LLM wrote: one question, or one feedback. Anything else is
//! a failure that may pass on the next attempt (models are not deterministic).

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

/// The most strengths, or improvements, a feedback may have. The prompt asks for three
/// at most; a few more are still a usable feedback, a list of dozens is not.
pub const MAX_FEEDBACK_ITEMS: usize = 5;

/// The longest strength or improvement we accept, in characters.
pub const MAX_FEEDBACK_ITEM_CHARS: usize = 500;

/// The longest feedback summary we accept, in characters.
pub const MAX_FEEDBACK_SUMMARY_CHARS: usize = 2_000;

/// The largest feedback reply we read at all, in bytes: what the bounds above allow,
/// escaped, with room for fields we ignore. Anything larger is refused before it is
/// parsed.
const MAX_FEEDBACK_REPLY_BYTES: usize = 64 * 1024;

/// A valid feedback on one answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Feedback {
    /// 1 (poor) to 5 (excellent).
    pub score: u8,
    pub strengths: Vec<String>,
    pub improvements: Vec<String>,
    pub summary: String,
}

/// Why a reply was not a valid question or feedback. The text is for logs; it may quote
/// the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the model's reply is not valid: {0}")]
pub struct InvalidOutput(pub String);

/// Extra fields are ignored: models add them, and the question is still whole.
#[derive(Deserialize)]
struct Reply {
    question_text: String,
    question_type: String,
}

/// Reads a JSON reply `{question_text, question_type}`.
pub fn parse_json(reply: &str) -> Result<Question, InvalidOutput> {
    let value: serde_json::Value = serde_json::from_str(unfence(reply))
        .map_err(|err| InvalidOutput(format!("not JSON ({err})")))?;
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

/// Some servers wrap JSON in a Markdown fence even when asked not to.
fn unfence(reply: &str) -> &str {
    reply
        .trim()
        .trim_start_matches("```json")
        .trim_start_matches("```")
        .trim_end_matches("```")
        .trim()
}

/// Extra fields are ignored, as for questions. The score is read as any JSON number and
/// checked by us: `4.0` is a whole score, `4.5` and `"4"` are not.
#[derive(Deserialize)]
struct FeedbackReply {
    score: serde_json::Number,
    strengths: Vec<String>,
    improvements: Vec<String>,
    summary: String,
}

/// Reads a feedback reply `{score, strengths, improvements, summary}`: a JSON object,
/// bare, in a Markdown fence, or surrounded by prose (servers asked for plain text, and
/// some others, say a few words around it). Every text is stripped of control characters
/// and trimmed before it is bounded.
pub fn parse_feedback(reply: &str) -> Result<Feedback, InvalidOutput> {
    if reply.len() > MAX_FEEDBACK_REPLY_BYTES {
        return Err(InvalidOutput(format!(
            "the reply has {} bytes, more than {MAX_FEEDBACK_REPLY_BYTES}",
            reply.len()
        )));
    }
    let body = unfence(reply);
    let value: serde_json::Value = match serde_json::from_str(body) {
        Ok(value) => value,
        // Not JSON as a whole: the object may be inside prose. Valid JSON that is not an
        // object (an array holding one, say) is refused below, not searched.
        Err(err) => outermost_object(body)
            .and_then(|object| serde_json::from_str(object).ok())
            .ok_or_else(|| InvalidOutput(format!("no JSON object ({err})")))?,
    };
    if !value.is_object() {
        return Err(InvalidOutput("not a JSON object".into()));
    }
    let reply: FeedbackReply = serde_json::from_value(value)
        .map_err(|err| InvalidOutput(format!("not the expected shape ({err})")))?;
    Ok(Feedback {
        score: score(&reply.score)?,
        strengths: items("strengths", reply.strengths)?,
        improvements: items("improvements", reply.improvements)?,
        summary: bounded("summary", &reply.summary, MAX_FEEDBACK_SUMMARY_CHARS)?,
    })
}

/// From the first `{` to the last `}`, if there are both.
fn outermost_object(text: &str) -> Option<&str> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    (start < end).then(|| &text[start..=end])
}

/// A whole number from 1 to 5, written as an integer or as a float with no fraction.
fn score(number: &serde_json::Number) -> Result<u8, InvalidOutput> {
    let found = match number.as_u64() {
        Some(n) => (1..=5).find(|score| u64::from(*score) == n),
        None => number
            .as_f64()
            .and_then(|f| (1..=5).find(|score| f64::from(*score) == f)),
    };
    found.ok_or_else(|| InvalidOutput(format!("score {number} is not a whole number from 1 to 5")))
}

/// A list of strengths or improvements: 1 to [`MAX_FEEDBACK_ITEMS`], each bounded.
fn items(field: &str, list: Vec<String>) -> Result<Vec<String>, InvalidOutput> {
    if list.is_empty() || list.len() > MAX_FEEDBACK_ITEMS {
        return Err(InvalidOutput(format!(
            "{field} has {} items, not 1 to {MAX_FEEDBACK_ITEMS}",
            list.len()
        )));
    }
    list.iter()
        .map(|item| bounded(field, item, MAX_FEEDBACK_ITEM_CHARS))
        .collect()
}

/// `text` without control characters, trimmed, and 1 to `max_chars` characters long.
fn bounded(field: &str, text: &str, max_chars: usize) -> Result<String, InvalidOutput> {
    let text = strip_controls(text);
    let text = text.trim();
    if text.is_empty() {
        return Err(InvalidOutput(format!("an empty text in {field}")));
    }
    let chars = text.chars().count();
    if chars > max_chars {
        return Err(InvalidOutput(format!(
            "a text in {field} has {chars} characters, more than {max_chars}"
        )));
    }
    Ok(text.to_owned())
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

    fn feedback_json(score: &str, strengths: &str, improvements: &str, summary: &str) -> String {
        format!(
            r#"{{"score": {score}, "strengths": {strengths}, "improvements": {improvements}, "summary": {summary}}}"#
        )
    }

    fn good() -> String {
        feedback_json(
            "4",
            r#"["Clear structure", " Concrete numbers "]"#,
            r#"["Say what you would do differently"]"#,
            r#"" A solid answer with measurable results. ""#,
        )
    }

    #[test]
    fn a_valid_feedback_reply_is_read_and_trimmed() {
        assert_eq!(
            parse_feedback(&good()).expect("valid"),
            Feedback {
                score: 4,
                strengths: vec!["Clear structure".into(), "Concrete numbers".into()],
                improvements: vec!["Say what you would do differently".into()],
                summary: "A solid answer with measurable results.".into(),
            }
        );
        // Extra fields are ignored; a float with no fraction is a whole score.
        let extra = feedback_json("5.0", r#"["a"]"#, r#"["b"]"#, r#""c""#).replace(
            "{\"score\"",
            "{\"reasoning\": {\"deep\": [1, 2]}, \"score\"",
        );
        assert_eq!(parse_feedback(&extra).expect("valid").score, 5);
        assert_eq!(
            parse_feedback(&feedback_json("1", r#"["a"]"#, r#"["b"]"#, r#""c""#))
                .expect("valid")
                .score,
            1
        );
    }

    #[test]
    fn a_feedback_in_a_fence_or_in_prose_is_found() {
        let fenced = format!("```json\n{}\n```", good());
        let prose = format!(
            "Here is my assessment of the answer:\n\n{}\n\nI hope this helps {{the candidate}}!",
            good().replace("{\"score\"", "{ \"score\"")
        );
        let fenced_in_prose = format!("Sure.\n```json\n{}\n```\nDone.", good());
        for reply in [fenced, fenced_in_prose] {
            assert_eq!(parse_feedback(&reply), parse_feedback(&good()), "{reply}");
        }
        // The outermost braces of that prose hold more than the object: not JSON.
        assert!(parse_feedback(&prose).is_err());
        let prose = format!("Here is my assessment:\n{}\nThanks.", good());
        assert_eq!(parse_feedback(&prose), parse_feedback(&good()));
    }

    #[test]
    fn a_score_that_is_not_a_whole_number_from_1_to_5_is_refused() {
        for score in [
            "0",
            "6",
            "9",
            "-1",
            "4.5",
            "\"4\"",
            "null",
            "true",
            "[4]",
            "{}",
            "1e400",
            "18446744073709551621",
        ] {
            let reply = feedback_json(score, r#"["a"]"#, r#"["b"]"#, r#""c""#);
            assert!(parse_feedback(&reply).is_err(), "score {score} accepted");
        }
        let missing = r#"{"strengths": ["a"], "improvements": ["b"], "summary": "c"}"#;
        assert!(parse_feedback(missing).is_err());
    }

    #[test]
    fn lists_must_hold_1_to_5_bounded_non_empty_strings() {
        let five = serde_json::to_string(&vec!["x"; MAX_FEEDBACK_ITEMS]).expect("json");
        let six = serde_json::to_string(&vec!["x"; MAX_FEEDBACK_ITEMS + 1]).expect("json");
        let at_bound = serde_json::to_string(&["é".repeat(MAX_FEEDBACK_ITEM_CHARS)]).expect("json");
        let long = serde_json::to_string(&["x".repeat(10_000)]).expect("json");
        let just_over =
            serde_json::to_string(&["x".repeat(MAX_FEEDBACK_ITEM_CHARS + 1)]).expect("json");
        for (list, ok) in [
            (five.as_str(), true),
            (at_bound.as_str(), true),
            (six.as_str(), false),
            ("[]", false),
            (long.as_str(), false),
            (just_over.as_str(), false),
            (r#"["fine", "   "]"#, false),
            (r#"["fine", "\u0000\u001b"]"#, false),
            (r#"[1, 2]"#, false),
            (r#"["fine", null]"#, false),
            (r#"[["nested"]]"#, false),
            (r#"[{"text": "an object"}]"#, false),
            (r#""a string""#, false),
            ("null", false),
        ] {
            for reply in [
                feedback_json("3", list, r#"["b"]"#, r#""c""#),
                feedback_json("3", r#"["a"]"#, list, r#""c""#),
            ] {
                assert_eq!(parse_feedback(&reply).is_ok(), ok, "{reply:.200}");
            }
        }
    }

    #[test]
    fn the_summary_must_be_a_bounded_non_empty_string() {
        let at_bound =
            serde_json::to_string(&"ș".repeat(MAX_FEEDBACK_SUMMARY_CHARS)).expect("json");
        let over =
            serde_json::to_string(&"x".repeat(MAX_FEEDBACK_SUMMARY_CHARS + 1)).expect("json");
        for (summary, ok) in [
            (at_bound.as_str(), true),
            (over.as_str(), false),
            (r#""""#, false),
            (r#"" \n\t ""#, false),
            (r#""\u0000\u0007\u009b""#, false),
            ("42", false),
            ("null", false),
            (r#"["a list"]"#, false),
        ] {
            let reply = feedback_json("2", r#"["a"]"#, r#"["b"]"#, summary);
            assert_eq!(parse_feedback(&reply).is_ok(), ok, "{reply:.200}");
        }
        let missing = r#"{"score": 2, "strengths": ["a"], "improvements": ["b"]}"#;
        assert!(parse_feedback(missing).is_err());
    }

    #[test]
    fn control_characters_are_stripped_from_every_feedback_text_before_its_bound() {
        let reply = feedback_json(
            "3",
            r#"["Clear\u0000 structure\u001b[31m", "\u009bGood\r\n\tpace\u007f"]"#,
            r#"["\u0007Be concise"]"#,
            &format!(
                r#""{}{}""#,
                "\\u0000".repeat(50),
                "x".repeat(MAX_FEEDBACK_SUMMARY_CHARS)
            ),
        );
        let feedback = parse_feedback(&reply).expect("valid once stripped");
        assert_eq!(feedback.strengths, ["Clear structure[31m", "Good\n\tpace"]);
        assert_eq!(feedback.improvements, ["Be concise"]);
        assert_eq!(feedback.summary.chars().count(), MAX_FEEDBACK_SUMMARY_CHARS);
        for text in feedback.strengths.iter().chain([&feedback.summary]) {
            assert!(
                !text.contains(['\0', '\u{1b}', '\u{9b}', '\u{7f}']),
                "{text:?}"
            );
        }
    }

    #[test]
    fn replies_that_are_not_one_feedback_object_are_refused() {
        let deep_object = format!("{}{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
        let deep_array = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
        let huge = format!(
            r#"{{"score": 3, "strengths": ["a"], "improvements": ["b"], "summary": "c", "pad": "{}"}}"#,
            "x".repeat(10 * 1024 * 1024)
        );
        let in_an_array = format!("[{}]", good());
        for bad in [
            "",
            "   ",
            "not json",
            "Great answer, 5 out of 5!",
            "42",
            "\"a string\"",
            "null",
            "[]",
            in_an_array.as_str(),
            "{",
            "} {",
            "{}",
            r#"{"score": 3}"#,
            r#"{"score": 3, "strengths": ["a"], "improvements": ["b"], "summary": "c""#,
            r#"{"score": 3, "strengths": ["a"], "improvements": ["b"], "summary": "\ud800"}"#,
            deep_object.as_str(),
            deep_array.as_str(),
            huge.as_str(),
        ] {
            assert!(parse_feedback(bad).is_err(), "accepted {bad:.200}");
        }
    }

    #[test]
    fn the_error_names_no_kind_of_output() {
        let err = parse_feedback("nope").expect_err("refused");
        assert!(
            err.to_string()
                .starts_with("the model's reply is not valid: "),
            "{err}"
        );
    }
}
