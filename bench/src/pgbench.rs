//! The physical limit: pgbench running our enqueue and completion transactions
//! (scripts/bench/pgbench/*.sql) on the same server, at a set number of clients.

use crate::stack::{Database, Setup};
use crate::stats::{Figures, percentile, round};
use anyhow::{Context, bail};
use std::path::Path;
use std::process::Command;
use uuid::Uuid;

/// One pgbench run of `script` with `clients` clients for `seconds`, on a fresh
/// database (a copy of `--template`'s history, if given) holding the data of
/// populate.sql; `rows_written` counts the rows of a table the transactions write, one
/// row each.
pub async fn run(
    setup: &Setup,
    scripts: &Path,
    script: &str,
    rows_written: &'static str,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<Figures> {
    let db = Database::create(setup).await?;
    let populate = std::fs::read_to_string(scripts.join("populate.sql"))?;
    // Our own file, read from the repo: safe to run as written.
    sqlx::raw_sql(sqlx::AssertSqlSafe(populate))
        .execute(&db.pool)
        .await?;
    // What is there before pgbench: populate.sql's rows and a template's history.
    let before: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(rows_written))
        .fetch_one(&db.pool)
        .await?;
    let prefix = setup
        .log_dir
        .join(format!("pgbench-{}", Uuid::new_v4().simple()));
    let output = Command::new("pgbench")
        .args(["--no-vacuum", "--protocol=prepared", "--log"])
        .arg(format!("--client={clients}"))
        .arg("--jobs=2")
        .arg(format!("--time={seconds}"))
        .arg(format!("--define=clients={clients}"))
        .arg("--define=k=0")
        .arg(format!("--file={}", scripts.join(script).display()))
        .arg(format!("--log-prefix={}", prefix.display()))
        .arg(&db.url)
        .output()
        .context("running pgbench (PostgreSQL's client tools on PATH?)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || stdout.contains("failed: ") && !stdout.contains("failed: 0 ") {
        bail!(
            "pgbench failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let tps = stdout
        .lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .with_context(|| format!("no tps in pgbench's output:\n{stdout}"))?;
    let mut latencies = transaction_latencies_ms(&prefix)?;
    // Each transaction must have written its row: a script that silently did nothing
    // (a conflict, a missed id) would measure nothing.
    let after: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(rows_written))
        .fetch_one(&db.pool)
        .await?;
    let written = after - before;
    if written != latencies.len() as i64 {
        bail!(
            "{script}: {} transactions but {written} rows written",
            latencies.len()
        );
    }
    db.drop_database().await?;
    let mut figures = Figures::new();
    figures.insert("transactions_per_sec".into(), round(tps));
    figures.insert("p50_ms".into(), round(percentile(&mut latencies, 50.0)));
    figures.insert("p99_ms".into(), round(percentile(&mut latencies, 99.0)));
    Ok(figures)
}

/// Every transaction's latency from pgbench's per-transaction logs (`prefix.*`,
/// third column in microseconds); the files are removed once read.
fn transaction_latencies_ms(prefix: &Path) -> anyhow::Result<Vec<f64>> {
    let dir = prefix.parent().context("log prefix without a folder")?;
    let stem = prefix
        .file_name()
        .and_then(|n| n.to_str())
        .context("log prefix without a name")?;
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_log = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&format!("{stem}.")));
        if !is_log {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            if let Some(us) = line
                .split_whitespace()
                .nth(2)
                .and_then(|f| f.parse::<f64>().ok())
            {
                latencies.push(us / 1000.0);
            }
        }
        std::fs::remove_file(&path)?;
    }
    Ok(latencies)
}
