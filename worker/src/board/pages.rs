//! The board's two views, as HTML strings: the queue at a glance, and one job.

use super::html::{age, escape, optional_time, page, path_segment, run_at, short, time};
use shared::db::board::{
    BOARD_STATES, BoardJob, BoardJobDetail, BoardSpender, BoardWorker, JOB_TYPES, JobFilter,
};
use shared::db::intake::{AuditEntry, Intake};
use std::time::Duration;

/// How much of a last error the list shows; the job's page shows all of it.
const SHORT_ERROR_CHARS: usize = 120;

/// What each state means, under its count.
fn meaning(state: &str) -> &'static str {
    match state {
        "pending" => "due, waiting for a worker",
        "held" => "behind its session's earlier question",
        "scheduled" => "due later",
        "running" => "held by a worker now",
        "retrying" => "failed, attempts left",
        "done" => "finished",
        "failed" => "attempts spent",
        "killed" => "ended: its operation failed",
        _ => "",
    }
}

/// `/board`: the counts by state (each a link to its jobs), the workers (the health
/// of the queue at a glance, above the fold), then the newest jobs (of one state when
/// `filter` is set).
#[derive(Debug)]
pub struct Overview<'a> {
    /// The intake switch.
    pub intake: &'a Intake,
    /// The newest operator actions.
    pub actions: &'a [AuditEntry],
    /// The CSRF token the action forms carry.
    pub csrf: &'a str,
    /// `(job type, state, count)`.
    pub counts: &'a [(String, String, i64)],
    pub jobs: &'a [BoardJob],
    pub workers: &'a [BoardWorker],
    /// The users whose questions took the most tokens in the last 24 hours.
    pub spenders: &'a [BoardSpender],
    /// What the list is narrowed to (the state's tile is highlighted).
    pub filter: JobFilter<'a>,
    /// Jobs per page: a full page may have older ones after it.
    pub page_size: i64,
    /// Workers silent longer than this have their jobs taken over.
    pub heartbeat_window: Duration,
}

impl Overview<'_> {
    pub fn render(&self) -> String {
        let mut body = self.intake_section();
        body.push_str("<h2>Jobs by state</h2>\n<div class=\"counts\">\n");
        // The tiles count the type the list is narrowed to, or every type.
        let counted = |state: Option<&str>| -> i64 {
            self.counts
                .iter()
                .filter(|(job_type, name, _)| {
                    self.filter.job_type.is_none_or(|t| t == job_type)
                        && state.is_none_or(|s| s == name)
                })
                .map(|(_, _, n)| n)
                .sum()
        };
        let total = counted(None);
        body.push_str(&format!(
            "<a class=\"count{}\" id=\"count-all\" href=\"/board\"><b>{total}</b>all<br><small>in the queue</small></a>\n",
            if self.filter.state.is_none() { " on" } else { "" },
        ));
        for state in BOARD_STATES {
            let count = counted(Some(state));
            body.push_str(&format!(
                "<a class=\"count{on}\" id=\"count-{state}\" href=\"/board?state={state}\"><b>{count}</b><span class=\"state {state}\">{state}</span><br><small>{meaning}</small></a>\n",
                on = if self.filter.state == Some(state) { " on" } else { "" },
                meaning = meaning(state),
            ));
        }
        body.push_str("</div>\n");
        body.push_str(&self.types_table());

        body.push_str("<h2>Workers</h2>\n");
        if self.workers.is_empty() {
            body.push_str("<p class=\"empty\">No worker has registered.</p>\n");
        } else {
            body.push_str(
                "<table>\n<tr><th>Worker</th><th>Queue</th><th>Last seen</th><th>Age</th><th>Running</th><th>Intake</th><th>Model calls / share</th><th>Breaker</th><th>Build</th></tr>\n",
            );
            for worker in self.workers {
                body.push_str(&self.worker_row(worker));
            }
            body.push_str("</table>\n");
        }

        body.push_str("<h2>Top users by tokens, last 24 hours</h2>\n");
        if self.spenders.is_empty() {
            body.push_str(
                "<p class=\"empty\">Nothing written by the model in the last 24 hours.</p>\n",
            );
        } else {
            body.push_str(
                "<table>\n<tr><th>User</th><th>Questions and feedback</th><th>Tokens</th></tr>\n",
            );
            for spender in self.spenders {
                body.push_str(&format!(
                    "<tr><td class=\"mono\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>\n",
                    spender.user_id, spender.questions, spender.tokens
                ));
            }
            body.push_str("</table>\n");
        }

        body.push_str(&self.actions_table());
        body.push_str(&self.search_form());
        body.push_str(&format!(
            "<h2>{} {} jobs{}</h2>\n",
            if self.filter.before.is_some() {
                "Older"
            } else {
                "Newest"
            },
            self.jobs.len(),
            self.filter
                .state
                .map(|state| format!(": {}", escape(state)))
                .unwrap_or_default(),
        ));
        if self.jobs.is_empty() {
            body.push_str("<p class=\"empty\">No job.</p>\n");
        } else {
            body.push_str(
                "<table>\n<tr><th>Job</th><th>Type</th><th>Operation</th><th>State</th><th>Attempts</th><th>Run at</th><th>Worker</th><th>Done at</th><th>Last error</th></tr>\n",
            );
            for job in self.jobs {
                body.push_str(&job_row(job));
            }
            body.push_str("</table>\n");
            body.push_str(&self.older_link());
        }
        page("Queue board", &body)
    }

    /// The intake switch, where it stands and the button that flips it: what an
    /// operator needs first in an incident.
    fn intake_section(&self) -> String {
        let (state, meaning, action, button) = if self.intake.paused {
            (
                "<span class=\"state failed\">paused</span>",
                format!(
                    "since {} ({}): workers claim no new job and finish those they hold; new operations wait <code>pending</code>, and the api tells clients to poll every 30 s.",
                    time(self.intake.changed_at),
                    age(self.intake.for_secs),
                ),
                "resume",
                "Resume intake",
            )
        } else {
            (
                "<span class=\"state done\">running</span>",
                "workers claim jobs as they come.".to_owned(),
                "pause",
                "Pause intake",
            )
        };
        format!(
            "<h2>Intake</h2>\n<p id=\"intake\">{state} {meaning}</p>\n<form method=\"post\" action=\"/board/intake\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"action\" value=\"{action}\"><button type=\"submit\">{button}</button></form>\n",
            csrf = escape(self.csrf),
        )
    }

    /// The operators' newest actions: what, when, from where.
    fn actions_table(&self) -> String {
        let mut table = String::from("<h2>Recent actions</h2>\n");
        if self.actions.is_empty() {
            table.push_str("<p class=\"empty\">No operator has acted.</p>\n");
            return table;
        }
        table.push_str(
            "<table id=\"audit\">\n<tr><th>When</th><th>Action</th><th>From</th><th>Note</th></tr>\n",
        );
        for action in self.actions {
            table.push_str(&format!(
                "<tr><td class=\"when\">{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td></tr>\n",
                time(action.at),
                escape(&action.action),
                escape(&action.address),
                escape(&action.detail),
            ));
        }
        table.push_str("</table>\n");
        table
    }

    /// Each job type's jobs by state, so that one type's backlog shows apart from the
    /// other's.
    fn types_table(&self) -> String {
        let mut table = String::from("<table id=\"by-type\">\n<tr><th>Type</th>");
        for state in BOARD_STATES {
            table.push_str(&format!("<th>{state}</th>"));
        }
        table.push_str("</tr>\n");
        for job_type in JOB_TYPES {
            table.push_str(&format!(
                "<tr><td><a href=\"/board?type={job_type}\">{job_type}</a></td>"
            ));
            for state in BOARD_STATES {
                let count = self
                    .counts
                    .iter()
                    .find(|(t, s, _)| t == job_type && s == state)
                    .map_or(0, |(_, _, n)| *n);
                table.push_str(&format!("<td class=\"num\">{count}</td>"));
            }
            table.push_str("</tr>\n");
        }
        table.push_str("</table>\n");
        table
    }

    /// Find by id, and narrow by type (a form: the query string carries it, and the
    /// state filter goes along).
    fn search_form(&self) -> String {
        let mut types = String::from("<option value=\"\">all types</option>");
        for job_type in JOB_TYPES {
            types.push_str(&format!(
                "<option value=\"{t}\"{selected}>{t}</option>",
                t = escape(job_type),
                selected = if self.filter.job_type == Some(job_type) {
                    " selected"
                } else {
                    ""
                },
            ));
        }
        format!(
            "<form method=\"get\" action=\"/board\" class=\"search\"><input type=\"hidden\" name=\"state\" value=\"{state}\"><input name=\"q\" size=\"40\" placeholder=\"operation, session or user id\" value=\"{q}\"> <select name=\"type\">{types}</select> <button>Find</button></form>\n",
            state = escape(self.filter.state.unwrap_or("")),
            q = self
                .filter
                .find
                .map(|id| id.to_string())
                .unwrap_or_default(),
        )
    }

    /// The link to the page after this one, when this one is full (older jobs may
    /// follow), keeping the filters.
    fn older_link(&self) -> String {
        let Some(last) = self.jobs.last() else {
            return String::new();
        };
        if (self.jobs.len() as i64) < self.page_size {
            return String::new();
        }
        let mut query = format!("before={}", path_segment(&last.id));
        if let Some(state) = self.filter.state {
            query.push_str(&format!("&state={}", path_segment(state)));
        }
        if let Some(job_type) = self.filter.job_type {
            query.push_str(&format!("&type={}", path_segment(job_type)));
        }
        if let Some(find) = self.filter.find {
            query.push_str(&format!("&q={find}"));
        }
        format!(
            "<p><a id=\"older\" href=\"/board?{}\">Older jobs →</a></p>\n",
            escape(&query)
        )
    }

    fn worker_row(&self, worker: &BoardWorker) -> String {
        let silent = worker.age_secs > self.heartbeat_window.as_secs_f64();
        format!(
            "<tr><td class=\"mono\">{id}</td><td>{queue}</td><td class=\"when\">{seen}</td><td class=\"num{class}\">{age}{note}</td><td class=\"num\">{running}</td><td>{intake}</td><td class=\"num\">{calls}</td><td>{breaker}</td><td class=\"mono\">{build}</td></tr>\n",
            id = escape(&worker.id),
            queue = escape(&worker.worker_type),
            seen = time(worker.last_seen),
            class = if silent { " silent" } else { "" },
            age = age(worker.age_secs),
            note = if silent { " (silent)" } else { "" },
            running = worker.running,
            intake = match worker.paused {
                Some(true) => "paused",
                Some(false) => "claiming",
                None => "—",
            },
            calls = match (worker.in_flight, worker.cap_share) {
                (Some(calls), Some(share)) => format!("{calls} / {share}"),
                (Some(calls), None) => format!("{calls} / no cap"),
                _ => "—".to_owned(),
            },
            build = escape(worker.build.as_deref().unwrap_or("—")),
            breaker = match worker.breaker_open {
                Some(true) => "<span class=\"state failed\">open: probing</span>",
                Some(false) => "closed",
                None => "—",
            },
        )
    }
}

fn job_row(job: &BoardJob) -> String {
    format!(
        "<tr><td class=\"mono\"><a href=\"/board/jobs/{href}\">{id}</a></td><td>{job_type}</td><td class=\"mono\">{operation}</td><td><span class=\"state {state}\">{state}</span></td><td class=\"num\">{attempts}/{max}</td><td class=\"when\">{run_at}</td><td class=\"mono\">{worker}</td><td class=\"when\">{done_at}</td><td class=\"err\">{error}</td></tr>\n",
        href = escape(&path_segment(&job.id)),
        id = escape(&job.id),
        job_type = escape(&job.job_type),
        operation = escape(job.operation_id.as_deref().unwrap_or("—")),
        state = escape(&job.state),
        attempts = job.attempts,
        max = job.max_attempts,
        run_at = run_at(job.run_at),
        worker = escape(job.lock_by.as_deref().unwrap_or("—")),
        done_at = optional_time(job.done_at),
        error = escape(&short(
            job.last_error.as_deref().unwrap_or(""),
            SHORT_ERROR_CHARS
        )),
    )
}

/// `/board/jobs/{id}`: every column of the job that matters, its whole last result,
/// and its operation.
pub fn job(detail: &BoardJobDetail) -> String {
    let job = &detail.job;
    let mut body = format!(
        "<h2>Job <span class=\"mono\">{id}</span></h2>\n<dl>\n",
        id = escape(&job.id)
    );
    let rows = [
        ("Type", escape(&job.job_type)),
        (
            "State",
            format!("<span class=\"state {0}\">{0}</span>", escape(&job.state)),
        ),
        ("apalis status", escape(&job.status)),
        (
            "Attempts",
            format!("{} of {}", job.attempts, job.max_attempts),
        ),
        (
            "Priority",
            detail
                .priority
                .map_or_else(|| "—".to_owned(), |p| p.to_string()),
        ),
        ("Run at", run_at(job.run_at)),
        (
            "Worker",
            format!(
                "<span class=\"mono\">{}</span>",
                escape(job.lock_by.as_deref().unwrap_or("—"))
            ),
        ),
        ("Locked at", optional_time(job.lock_at)),
        ("Done at", optional_time(job.done_at)),
    ];
    for (name, value) in rows {
        body.push_str(&format!("<dt>{name}</dt><dd>{value}</dd>\n"));
    }
    body.push_str("</dl>\n<h2>Last result</h2>\n");
    match &detail.last_result {
        Some(result) => {
            let pretty =
                serde_json::to_string_pretty(result).unwrap_or_else(|_| result.to_string());
            body.push_str(&format!("<pre>{}</pre>\n", escape(&pretty)));
        }
        None => body.push_str("<p class=\"empty\">None yet: no attempt has ended.</p>\n"),
    }

    body.push_str(&format!(
        "<h2>Operation <span class=\"mono\">{}</span></h2>\n",
        escape(job.operation_id.as_deref().unwrap_or("—"))
    ));
    match &detail.operation {
        Some(operation) => {
            body.push_str("<dl>\n");
            let rows = [
                ("Status", escape(&operation.status)),
                ("Attempts", operation.attempts.to_string()),
                (
                    "Error",
                    escape(operation.error_message.as_deref().unwrap_or("—")),
                ),
                ("Created at", time(operation.created_at)),
                ("Started at", optional_time(operation.started_at)),
                ("Updated at", time(operation.updated_at)),
            ];
            for (name, value) in rows {
                body.push_str(&format!("<dt>{name}</dt><dd>{value}</dd>\n"));
            }
            body.push_str("</dl>\n");
        }
        None => body.push_str(
            "<p class=\"empty\">Gone: deleted by retention (OPERATION_RETENTION_DAYS) or with its user.</p>\n",
        ),
    }
    page(&format!("Job {}", job.id), &body)
}

/// A short page with one message (a 404, a 401, a bad filter, an error) and the way
/// back to the board.
pub fn notice(title: &str, text: &str) -> String {
    page(
        title,
        &format!(
            "<p>{}</p>\n<p><a href=\"/board\">Back to the board</a></p>\n",
            escape(text)
        ),
    )
}
