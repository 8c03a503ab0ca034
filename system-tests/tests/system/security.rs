//! Unsafe settings, tried on the real binary: the api refuses to start on a signing key
//! anyone could guess, and says which setting is wrong.

use sqlx::PgPool;
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::fixtures::migrated;
use testkit::postgres::database_url;
use testkit::process::{binary_dir, free_addr};

#[sqlx::test(migrations = false)]
async fn the_api_refuses_a_weak_jwt_secret_naming_it(pool: PgPool) {
    migrated(&pool).await;
    let db = database_url(&pool);
    for weak in [
        "",
        "short-secret",
        "REPLACE_WITH_OUTPUT_OF_openssl_rand_hex_32",
        "change-me-to-a-long-random-secret",
    ] {
        let mut child = Command::new(binary_dir().join("api"))
            .env_clear()
            .env("DATABASE_URL", &db)
            .env("API_ADDR", free_addr())
            .env("JWT_SECRET", weak)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the api");
        let status = testkit::eventually(
            format_args!("the api to exit on JWT_SECRET={weak:?}"),
            Duration::from_secs(30),
            || {
                let exited = child.try_wait().expect("wait");
                async move { exited }
            },
        )
        .await;
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
            .expect("read stderr");
        assert!(!status.success(), "{weak:?} was accepted");
        assert!(stderr.contains("JWT_SECRET"), "{weak:?}: {stderr}");
        assert!(
            weak.is_empty() || !stderr.contains(weak),
            "the secret was echoed: {stderr}"
        );
    }
}
