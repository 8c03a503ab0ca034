//! SQL for `intake` (the operator's switch that pauses the workers' claims) and
//! `ops_audit` (every action an operator takes on the queue board).

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, PgPool};

/// The switch as it stands.
#[derive(Debug, Clone, Copy, PartialEq, sqlx::FromRow)]
pub struct Intake {
    pub paused: bool,
    /// When it last changed.
    pub changed_at: DateTime<Utc>,
    /// Seconds since it last changed, by the database's clock.
    pub for_secs: f64,
}

/// Reads the switch. Without its row (a database migrated by hand, half way), intake
/// runs: a missing switch must not stop the service.
pub async fn read(conn: &mut PgConnection) -> Result<Intake, sqlx::Error> {
    let row: Option<Intake> = sqlx::query_as(
        "SELECT paused, changed_at, extract(epoch FROM now() - changed_at)::float8 AS for_secs
         FROM intake",
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.unwrap_or(Intake {
        paused: false,
        changed_at: DateTime::<Utc>::UNIX_EPOCH,
        for_secs: 0.0,
    }))
}

/// Sets the switch and writes the action to the audit, in one transaction; returns
/// whether the switch changed (pausing a paused intake changes nothing, and is still
/// written down, as what the operator did).
pub async fn set(
    conn: &mut PgConnection,
    paused: bool,
    address: &str,
) -> Result<bool, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let changed = sqlx::query(
        "UPDATE intake SET paused = $1, changed_at = now() WHERE paused IS DISTINCT FROM $1",
    )
    .bind(paused)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let action = if paused { "pause" } else { "resume" };
    let detail = if changed {
        ""
    } else {
        "no change: it was so already"
    };
    sqlx::query("INSERT INTO ops_audit (action, address, detail) VALUES ($1, $2, $3)")
        .bind(action)
        .bind(address)
        .bind(detail)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(changed)
}

/// One operator action.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub action: String,
    pub address: String,
    pub detail: String,
}

/// The newest `limit` actions, newest first.
pub async fn audit(pool: &PgPool, limit: i64) -> Result<Vec<AuditEntry>, sqlx::Error> {
    sqlx::query_as("SELECT at, action, address, detail FROM ops_audit ORDER BY id DESC LIMIT $1")
        .bind(limit)
        .fetch_all(pool)
        .await
}
