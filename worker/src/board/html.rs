//! The few pieces of HTML the board's pages share: escaping, the page around them,
//! and how times, ages and long errors are written. Every value from the database
//! goes through [`escape`]: a job's last error is whatever a model or a library said.

use chrono::{DateTime, Utc};

/// `text` made safe inside HTML text and inside quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// `text` as one segment of a URL path: what is not unreserved is percent-encoded, so
/// that an id can never end the path or start a query. Escape the result for HTML too.
pub fn path_segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// A time, to the second, in UTC (the page says so once).
pub fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A time that may be absent.
pub fn optional_time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "—".to_owned(), time)
}

/// A job's `run_at`: a held job's is the end of time (`question_job_held_until()`),
/// which says nothing as a date.
pub fn run_at(at: DateTime<Utc>) -> String {
    if at.timestamp() >= shared::jobs::HELD_UNTIL as i64 {
        "held until released".to_owned()
    } else {
        time(at)
    }
}

/// Seconds as a person reads an age: `42 s`, `5 min`, `3 h`, `2 d`.
pub fn age(secs: f64) -> String {
    let secs = secs.max(0.0).round() as u64;
    match secs {
        0..60 => format!("{secs} s"),
        60..3_600 => format!("{} min", secs / 60),
        3_600..86_400 => format!("{} h", secs / 3_600),
        _ => format!("{} d", secs / 86_400),
    }
}

/// `text` on one line and at most `max` characters, an ellipsis marking a cut: the
/// list shows the start of an error, the job's page shows all of it.
pub fn short(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// A whole page: the title, the note on what the board leaves out, and `body` (HTML
/// already escaped). No script and nothing fetched from elsewhere: the worker serves
/// it from memory, and the headers forbid scripts outright.
pub fn page(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{STYLE}</style>
</head>
<body>
<header><a class="home" href="/board">Queue board</a> <span class="queue">question_generation · feedback_analysis</span></header>
<p class="note">One action: the intake switch. Otherwise read-only: a failed operation stays failed (the owner asks again); cancelling is the owner's: <code>POST /api/v1/operations/{{id}}/cancel</code> on the api. Times are UTC.</p>
{body}
</body>
</html>
"#,
        title = escape(title),
    )
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 24px 24px;color:#1d2330;background:#f6f7f9}
header{padding:14px 0 6px;font-size:20px;font-weight:600}
header .home{color:#1d2330;text-decoration:none}
header .queue{font:13px ui-monospace,monospace;color:#5b6475;margin-left:8px}
h2{font-size:15px;margin:22px 0 8px}
a{color:#1f5fbf}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12.5px}
.note{margin:0 0 12px;padding:6px 10px;border-left:3px solid #c8a200;background:#fffbe6;color:#4a4000}
.counts{display:flex;flex-wrap:wrap;gap:8px}
.count{display:block;min-width:98px;padding:8px 10px;border:1px solid #d9dde5;border-radius:6px;background:#fff;color:inherit;text-decoration:none}
.count b{display:block;font-size:22px}
.count small{color:#5b6475}
.count.on{outline:2px solid #1f5fbf}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d9dde5}
th,td{padding:5px 8px;border-bottom:1px solid #eceef2;text-align:left;vertical-align:top}
th{background:#eef0f4;font-weight:600;white-space:nowrap}
td.num{text-align:right;white-space:nowrap}
td.when{white-space:nowrap}
td.err{color:#9b1c1c;max-width:360px}
.state{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;background:#e5e7eb}
.state.pending{background:#dbeafe}.state.held{background:#ede9fe}.state.scheduled{background:#e0f2fe}
.state.running{background:#fef3c7}.state.retrying{background:#ffedd5}.state.done{background:#dcfce7}
.state.failed{background:#fee2e2}.state.killed{background:#e5e7eb}
.silent{color:#9b1c1c}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;background:#fff;border:1px solid #d9dde5;padding:10px 14px;margin:0}
dt{color:#5b6475}dd{margin:0}
pre{background:#fff;border:1px solid #d9dde5;padding:10px 14px;overflow:auto;white-space:pre-wrap;word-break:break-word}
.empty{color:#5b6475}
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_values_is_escaped() {
        assert_eq!(
            escape(r#"<script>alert("x&y")</script> 'q'"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt; &#39;q&#39;"
        );
        assert_eq!(escape("plain ünïcode"), "plain ünïcode");
        assert_eq!(
            escape("&amp;"),
            "&amp;amp;",
            "escaped once more, never decoded"
        );
    }

    #[test]
    fn an_id_stays_one_path_segment() {
        assert_eq!(path_segment("01KB2Z9Q"), "01KB2Z9Q");
        assert_eq!(path_segment("a/b?c#d e"), "a%2Fb%3Fc%23d%20e");
        assert_eq!(path_segment("é"), "%C3%A9");
    }

    #[test]
    fn long_errors_are_cut_on_a_character_and_on_one_line() {
        assert_eq!(short("short", 10), "short");
        assert_eq!(short("line one\n  line two", 100), "line one line two");
        assert_eq!(short("ééééé", 3), "ééé…");
    }

    #[test]
    fn ages_and_held_run_ats_read_as_words() {
        assert_eq!(age(-1.0), "0 s");
        assert_eq!(age(59.4), "59 s");
        assert_eq!(age(61.0), "1 min");
        assert_eq!(age(7_200.0), "2 h");
        assert_eq!(age(200_000.0), "2 d");
        let held = DateTime::from_timestamp(shared::jobs::HELD_UNTIL as i64, 0).expect("time");
        assert_eq!(run_at(held), "held until released");
        let due = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        assert_eq!(run_at(due), "2023-11-14 22:13:20");
    }

    #[test]
    fn the_page_escapes_its_title() {
        let page = page("<b>", "<p>body</p>");
        assert!(page.contains("<title>&lt;b&gt;</title>"));
        assert!(page.contains("<p>body</p>"));
        assert!(!page.contains("<script"));
    }
}
