//! `bench`: the benchmarks of BENCHMARKS.md, run by hand. Each figure brings up its own
//! stack (a fresh database, the real `api` and `worker` binaries, a fake LLM of set
//! latency, testkit's fake provider), drives it from this separate process over real HTTP, and prints one JSON
//! line per run and one with the median of the runs.

mod figures;
mod llm;
mod load;
mod pgbench;
mod seed;
mod soak;
mod stack;
mod stats;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use stack::Setup;
use stats::Figures;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(about = "Benchmarks of the interview service (see BENCHMARKS.md)")]
struct Cli {
    #[command(subcommand)]
    figure: Figure,
    /// Runs of each figure; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where the `api` and `worker` binaries are.
    #[arg(long, default_value = "target/profiling")]
    bin_dir: PathBuf,
    /// Any database on the PostgreSQL server; each run creates and drops its own.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/interviewer"
    )]
    database_url: String,
    /// Where the binaries' logs and pgbench's transaction logs go.
    #[arg(long, default_value = ".local/bench")]
    log_dir: PathBuf,
    /// Trace every request and job (100 % sampling), exported over OTLP/HTTP to a
    /// receiver in this process that decodes and keeps every span (testkit's), as a
    /// collector would; off by default, as the service's own default is.
    #[arg(long)]
    traces: bool,
    /// The pgbench scripts.
    #[arg(long, default_value = "scripts/bench/pgbench")]
    pgbench_scripts: PathBuf,
    /// A database on the server (one that `seed --keep-as NAME` left) that each run's
    /// database is a file copy of: the figures then run on days of history, as in
    /// production, without the minutes of seeding per run. They count only the rows
    /// written after the copy.
    #[arg(long, global = true, value_name = "NAME", value_parser = stack::database_name)]
    template: Option<String>,
    /// Only the runs that figure 3's ratio to pgbench compares: end-to-end without a
    /// cap (1 and 2 workers) and pgbench's completion (10 and 20 clients). On a copy
    /// of a seeded template each run starts with a copy of gigabytes, so the others
    /// (the cap, the enqueue) are left for the fresh database's full run.
    #[arg(long, global = true)]
    ratio_only: bool,
}

#[derive(Debug, Clone, Subcommand)]
enum Figure {
    /// 1. POST generate-question at 32 and 128 connections, then at 32 while two
    ///    workers drain the queue.
    Enqueue,
    /// 2. GET /operations/{id} at 64 connections.
    Poll,
    /// 3. End-to-end jobs/s with an instant LLM, 1 and 2 workers, 10,000 jobs; with
    ///    LLM_MAX_IN_FLIGHT unset and set (1,000: it does not bind).
    EndToEnd,
    /// 3b. End-to-end jobs/s with half the jobs feedback, beside figure 3: 1 and 2
    ///     workers, 10,000 jobs, instant LLM.
    EndToEndMixed,
    /// 4. Jobs in flight and RSS of one worker at WORKER_CONCURRENCY 1,000, 2 s LLM;
    ///    with LLM_MAX_IN_FLIGHT unset and set (10,000: it does not bind).
    InFlight,
    /// 5. Pickup latency at 50 jobs/s.
    Pickup,
    /// 6. Long-poll wake latency.
    Wake,
    /// 7. pgbench with our enqueue and completion transactions.
    Pgbench,
    /// 8. Overhead: POST then long poll, minus a 2 s model, at 100 and 300 arrivals/s
    ///    (open loop) for 30 s, one worker at WORKER_CONCURRENCY 1,000.
    Overhead,
    /// Every figure above, in order.
    All,
    /// The soak (issue 26): a database seeded with `--seed-days` of history at
    /// `--seed-rate` questions a second, the capacity measured, then open-loop arrivals
    /// at `--rate` (default 60 % of that capacity) for `--minutes`, with a CSV row every
    /// 10 s and a verdict per target at the end. Needs a PostgreSQL with
    /// pg_stat_statements and auto_explain: run it through `scripts/bench/run.sh soak`.
    Soak {
        #[arg(long, default_value_t = 60.0)]
        minutes: f64,
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value_t = 8.0)]
        seed_days: f64,
        #[arg(long, default_value_t = 8.0)]
        seed_rate: f64,
    },
    /// A database of its own seeded with `--days` of history at `--rate` questions a
    /// second (what the soak starts from), kept; prints its URL.
    Seed {
        #[arg(long, default_value_t = 8.0)]
        days: f64,
        #[arg(long, default_value_t = 8.0)]
        rate: f64,
        /// The name to keep it under, for `--template NAME` (a name of our own choosing
        /// rather than the random one); fails if the server has a database so named.
        #[arg(long, value_name = "NAME", value_parser = stack::database_name)]
        keep_as: Option<String>,
    },
}

/// What the pgbench scripts write, one row per transaction (counted before and after).
const JOBS: &str = "SELECT count(*) FROM apalis.jobs";
const MESSAGES: &str = "SELECT count(*) FROM session_messages";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::tls::install_crypto_provider();
    let cli = Cli::parse();
    std::fs::create_dir_all(&cli.log_dir)?;
    let receiver = match cli.traces {
        true => Some(testkit::otlp::OtlpReceiver::start().await),
        false => None,
    };
    let setup = Setup {
        bin_dir: cli.bin_dir.clone(),
        database_url: cli.database_url.clone(),
        log_dir: cli.log_dir.clone(),
        otlp_endpoint: receiver.as_ref().map(|r| r.http_endpoint.clone()),
        template: cli.template.clone(),
    };
    let figures = match &cli.figure {
        Figure::All => vec![
            Figure::Enqueue,
            Figure::Poll,
            Figure::EndToEnd,
            Figure::EndToEndMixed,
            Figure::InFlight,
            Figure::Pickup,
            Figure::Wake,
            Figure::Pgbench,
            Figure::Overhead,
        ],
        one => vec![one.clone()],
    };
    // The other figures count every row of their database, which on a copy of a
    // template would include its history. (The soak takes its history from the
    // template instead of seeding.)
    if let Some(template) = &cli.template
        && let Some(other) = figures.iter().find(|f| {
            !matches!(
                f,
                Figure::EndToEnd | Figure::EndToEndMixed | Figure::Pgbench | Figure::Soak { .. }
            )
        })
    {
        anyhow::bail!(
            "--template {template}: only end-to-end, end-to-end-mixed, pgbench and soak \
             count just their own rows, not {other:?}"
        );
    }
    for figure in figures {
        run_figure(&cli, &setup, figure).await?;
    }
    if let Some(receiver) = receiver {
        let spans = receiver.spans();
        let traces: std::collections::HashSet<&str> =
            spans.iter().map(|s| s.trace_id.as_str()).collect();
        println!(
            "{}",
            json!({"traces_received": traces.len(), "spans_received": spans.len()})
        );
    }
    Ok(())
}

async fn run_figure(cli: &Cli, setup: &Setup, figure: Figure) -> anyhow::Result<()> {
    match figure {
        Figure::Soak {
            minutes,
            rate,
            seed_days,
            seed_rate,
        } => {
            let since_epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let args = soak::Soak {
                minutes,
                rate,
                history: seed::History {
                    days: seed_days,
                    rate: seed_rate,
                },
                out: setup.log_dir.join(format!("soak-{since_epoch}")),
            };
            let params = json!({"minutes": minutes, "rate": rate, "seed_days": seed_days, "seed_rate": seed_rate,
                                "template": setup.template});
            let figures = soak::soak(setup, &args).await?;
            stats::emit("soak", "run", &params, &figures);
            // The path run.sh plots, and its exit status: a gated verdict that failed.
            println!("{}", json!({"soak_dir": args.out.display().to_string()}));
            if figures["verdicts_gated_failed"] != 0 {
                anyhow::bail!("the soak failed a gated verdict (see its verdicts.jsonl)");
            }
        }
        Figure::Seed {
            days,
            rate,
            keep_as,
        } => {
            let db = stack::Database::create(setup).await?;
            if let Some(name) = &keep_as {
                // Before the minutes of seeding rather than after them.
                if let Err(taken) = db.ensure_absent(name).await {
                    db.drop_database().await?;
                    return Err(taken);
                }
            }
            seed::seed(&db.url, seed::History { days, rate }).await?;
            let url = match keep_as {
                Some(name) => db.keep_as(&name).await?,
                None => db.url,
            };
            println!("{}", json!({"seeded_database": url}));
        }
        Figure::Enqueue => {
            for (connections, workers) in [(32, 0), (128, 0), (32, 2)] {
                let params = json!({"connections": connections, "draining_workers": workers});
                repeat(cli, "enqueue", params, || {
                    figures::enqueue(setup, connections, workers)
                })
                .await?;
            }
        }
        Figure::Poll => {
            repeat(cli, "poll", json!({"connections": 64}), || {
                figures::poll(setup, 64)
            })
            .await?;
        }
        Figure::EndToEnd => {
            let caps: &[u32] = if cli.ratio_only { &[0] } else { &[0, 1_000] };
            for workers in [1, 2] {
                for &cap in caps {
                    repeat(
                        cli,
                        "end_to_end",
                        json!({"jobs": 10_000, "workers": workers, "llm_max_in_flight": cap}),
                        || figures::end_to_end(setup, 10_000, workers, cap),
                    )
                    .await?;
                }
            }
        }
        Figure::EndToEndMixed => {
            for workers in [1, 2] {
                repeat(
                    cli,
                    "end_to_end_mixed",
                    json!({"jobs": 10_000, "feedback_jobs": 5_000, "workers": workers, "llm_max_in_flight": 0}),
                    || figures::end_to_end_mixed(setup, 10_000, workers),
                )
                .await?;
            }
        }
        Figure::InFlight => {
            for cap in [0, 10_000] {
                let params = json!({"jobs": 6_000, "worker_concurrency": 1_000, "llm_latency_ms": 2_000, "llm_max_in_flight": cap});
                repeat(cli, "in_flight", params, || {
                    figures::in_flight(setup, 6_000, 1_000, 2_000, cap)
                })
                .await?;
            }
        }
        Figure::Pickup => {
            repeat(
                cli,
                "pickup",
                json!({"rate_per_sec": 50, "seconds": 20}),
                || figures::pickup(setup, 50, 20),
            )
            .await?;
        }
        Figure::Wake => {
            repeat(cli, "wake", json!({"count": 200}), || {
                figures::wake(setup, 200)
            })
            .await?;
        }
        Figure::Pgbench => {
            let scripts = &cli.pgbench_scripts;
            // 10 is the api's pool (DATABASE_MAX_CONNECTIONS): what PostgreSQL sees from
            // the api at any number of HTTP connections. 128 clients are more than a
            // default server accepts (max_connections 100), hence 64.
            let enqueue_clients: &[usize] = if cli.ratio_only { &[] } else { &[10, 32, 64] };
            for &clients in enqueue_clients {
                repeat(cli, "pgbench_enqueue", json!({"clients": clients}), || {
                    pgbench::run(setup, scripts, "enqueue.sql", JOBS, clients, 12)
                })
                .await?;
            }
            // The database connections of one and of two workers (10 each by default).
            for clients in [10, 20] {
                repeat(cli, "pgbench_complete", json!({"clients": clients}), || {
                    pgbench::run(setup, scripts, "complete.sql", MESSAGES, clients, 12)
                })
                .await?;
            }
        }
        Figure::Overhead => {
            for rate in [100, 300] {
                let params = json!({"arrivals_per_sec": rate, "seconds": 30, "llm_latency_ms": 2_000, "worker_concurrency": 1_000});
                repeat(cli, "overhead", params, || {
                    figures::overhead(setup, rate, 30, 2_000, 1_000)
                })
                .await?;
            }
        }
        Figure::All => unreachable!("expanded by main"),
    }
    Ok(())
}

/// Runs one figure `cli.runs` times: a line per run, then a line with the medians.
async fn repeat<F, Fut>(cli: &Cli, name: &str, params: Value, mut run: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Figures>>,
{
    let mut runs = Vec::with_capacity(cli.runs);
    for n in 1..=cli.runs {
        let figures = run().await?;
        let mut params = params.clone();
        params["run"] = json!(n);
        stats::emit(name, "run", &params, &figures);
        runs.push(figures);
    }
    let mut params = params;
    params["runs"] = json!(cli.runs);
    stats::emit(name, "median", &params, &stats::median_of(&runs));
    Ok(())
}
