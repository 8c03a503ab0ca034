//! The PostgreSQL around the tests: where its programs are (for tests that run a cluster
//! of their own), and the URL of a `#[sqlx::test]` database for a child process.
//! `scripts/lib/postgres.sh` does the same lookup for the scripts.

use sqlx::PgPool;
use std::path::PathBuf;

/// The newest directory that holds `initdb` and `pg_ctl`: on `PATH`, or Debian's
/// `/usr/lib/postgresql/<version>/bin`.
pub fn bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    // Newest version first: "15" sorts after "9" only by number.
    debian.sort_by_key(|dir| {
        dir.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    on_path
        .into_iter()
        .chain(debian.into_iter().rev())
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

/// The URL of `pool`'s database (a `#[sqlx::test]` one), for a child process: the
/// server of `DATABASE_URL`, the database of the pool.
pub fn database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for tests");
    let db = pool
        .connect_options()
        .get_database()
        .expect("a database name")
        .to_owned();
    match base.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{db}"),
        None => panic!("DATABASE_URL has no database part"),
    }
}
