//! `sqlx::migrate!` embeds `migrations/` at compile time, but a proc macro cannot tell
//! cargo to watch a directory: without this, a new migration is left out of the build
//! until something else in the crate changes.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
