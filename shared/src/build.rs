//! What this build is: the release version (the workspace's) and the git commit it was
//! built from. The commit comes from `GIT_COMMIT` in the build's environment (the
//! Dockerfile's build argument: an image build does not see `.git`), else `unknown`: a
//! local build reports `unknown` unless it is set (setting it only for some builds
//! would rebuild everything each time it changes). Both binaries report them in
//! `--version`, their first log line and the `build_info` metric, and a worker on the
//! queue board.

/// The release version, e.g. `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit of the build, or `unknown`.
pub const COMMIT: &str = match option_env!("GIT_COMMIT") {
    Some(commit) if !commit.is_empty() => commit,
    _ => "unknown",
};

/// `0.1.0 (commit abc1234)`: what `--version` prints after the binary's name.
pub fn version_line() -> &'static str {
    static LINE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LINE.get_or_init(|| format!("{VERSION} (commit {COMMIT})"))
}

/// Sets `build_info{version,commit}` to 1: the usual way to put a build on a
/// dashboard (join on it, or count the versions running during a rollout).
pub fn register_build_info() {
    metrics::describe_gauge!(
        "build_info",
        "1, labelled with the running build's version and git commit."
    );
    metrics::gauge!("build_info", "version" => VERSION, "commit" => COMMIT).set(1.0);
}
