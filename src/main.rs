//! The `trailsight` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use trailsight::commands::replay::{ReplayOptions, replay};
use trailsight::config::Config;
use trailsight::escape::escaped;
use trailsight::sink::local::read_insight_files;
use trailsight::synth::demo::write_demo_bucket;

/// Self-hosted CloudTrail Insights: unusual API call and error rates in your CloudTrail logs,
/// reported as CloudTrail Insights events.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read every CloudTrail log file under a folder, detect, and write Insights files.
    Replay {
        /// Folder with CloudTrail logs (e.g. from `aws s3 sync s3://<trail-bucket>/AWSLogs ./logs/AWSLogs`), or one file.
        #[arg(long)]
        source: PathBuf,
        /// Folder receiving `AWSLogs/<account>/CloudTrail-Insight/…` files.
        #[arg(long)]
        sink: PathBuf,
        /// TOML configuration file (see README).
        #[arg(long)]
        config: Option<PathBuf>,
        /// State folder: continue from its checkpoint, skip files already seen, and save a
        /// checkpoint (open minutes kept open) that `serve` can start from.
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Run continuously: poll the sources in the config's `[serve]` table, write Insights as they are decided,
    /// checkpoint to the state folder; SIGTERM/SIGINT finish the files in flight, checkpoint and exit 0.
    Serve {
        /// TOML configuration file with a `[serve]` table (see README).
        #[arg(long)]
        config: PathBuf,
        /// Process what is there now, checkpoint and exit (instead of polling forever).
        #[arg(long)]
        once: bool,
    },
    /// Build a 9.5-day demo bucket from real records with an injected CreateAccessKey burst, replay it, show the Insights.
    Demo {
        /// Output folder (bucket in `<out>/bucket`, Insights in `<out>/insights`).
        #[arg(long, default_value = "demo-out")]
        out: PathBuf,
        /// Days of traffic.
        #[arg(long, default_value_t = 9.5)]
        days: f64,
        /// Multiplier on every background rate (e.g. 20 for a ~2-million-record bucket over 20 days).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
    },
    /// Score detection on labeled buckets with injected attacks of several shapes; print a table.
    Evaluate {
        /// Working folder (buckets and Insights).
        #[arg(long, default_value = "eval-out")]
        out: PathBuf,
        /// Per-minute rate series (`timestamp,value` CSV) for the busy APIs, e.g. the Twitter series.
        #[arg(long, env = "TRAILSIGHT_TWITTER_CSV")]
        rates: Option<PathBuf>,
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Score a rate series (NAB format `timestamp,value`); write `timestamp,value,anomaly_score,label`.
    Series {
        /// Input CSV.
        #[arg(long)]
        input: PathBuf,
        /// Output CSV.
        #[arg(long)]
        output: PathBuf,
        /// Bucket length of the series (e.g. `5m`); inferred from the timestamps when omitted.
        #[arg(long)]
        bucket: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A service reports what it does; one-shot commands print their own summary. RUST_LOG overrides.
    let default_level = match cli.command {
        Command::Serve { .. } => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_level.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .fmt_fields(escaping_fields())
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Paths, keys and values in the message may come from a log or a listing.
            eprintln!("error: {}", escaped(format_args!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Log fields written as `name=value` (the message as is), every value with its control
/// characters escaped: a log field often holds a file key or a reason quoting a record, and
/// tracing-subscriber 0.3 escapes only some of them (ESC, BEL, BS, FF, DEL, C1) and only in the
/// message, never a newline, so a raw `\n` in a `%`-field would forge a log line.
fn escaping_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        if field.name() == "message" {
            write!(w, "{}", escaped(format_args!("{value:?}")))
        } else {
            write!(w, "{field}={}", escaped(format_args!("{value:?}")))
        }
    })
    .delimited(" ")
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, once } => {
            let config = Config::load(&config)?;
            runtime()?.block_on(trailsight::commands::serve::serve(config, once))?;
            Ok(())
        }
        Command::Replay {
            source,
            sink,
            config,
            state,
        } => {
            let config = match config {
                Some(path) => Config::load(&path)?,
                None => Config::default(),
            };
            let summary = runtime()?.block_on(replay(ReplayOptions {
                source,
                sink,
                config,
                progress: true,
                state,
            }))?;
            println!("{summary}");
            Ok(())
        }
        Command::Evaluate { out, rates, config } => {
            let config = match config {
                Some(path) => Config::load(&path)?,
                None => Config::default(),
            };
            let series = match rates {
                Some(p) => Some(std::sync::Arc::new(
                    trailsight::synth::read_rate_csv(&p)
                        .with_context(|| format!("cannot read {}", p.display()))?,
                )),
                None => None,
            };
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let eval = runtime()?.block_on(trailsight::commands::evaluate::evaluate(
                &out, series, config,
            ))?;
            println!("{eval}");
            Ok(())
        }
        Command::Series {
            input,
            output,
            bucket,
        } => {
            let s = trailsight::commands::series::run(&input, &output, bucket.as_deref())?;
            println!(
                "{} rows scored ({} s buckets), {} labeled anomalous; wrote {}",
                s.rows,
                s.bucket_seconds,
                s.labeled,
                escaped(output.display())
            );
            Ok(())
        }
        Command::Demo { out, days, scale } => {
            if !(days > 0.0 && scale > 0.0) {
                anyhow::bail!("--days and --scale must be positive");
            }
            println!(
                "building a {days}-day demo bucket from real CloudTrail records in {} …",
                escaped(out.display())
            );
            let (bucket, stats) =
                write_demo_bucket(&out, days, scale).context("cannot write the demo bucket")?;
            println!(
                "  {} log files, {} records, {:.1} MB gzip",
                stats.files,
                stats.records,
                stats.bytes as f64 / 1e6
            );
            let sink = out.join("insights");
            if sink.exists() {
                std::fs::remove_dir_all(&sink)
                    .with_context(|| format!("cannot clear {}", sink.display()))?;
            }
            let summary = runtime()?.block_on(replay(ReplayOptions {
                source: bucket,
                sink: sink.clone(),
                config: Config::default(),
                progress: true,
                state: None,
            }))?;
            println!("\nreplay:\n{summary}\n");
            print_insights(&sink)?;
            Ok(())
        }
    }
}

fn print_insights(sink: &std::path::Path) -> anyhow::Result<()> {
    let files = read_insight_files(sink)
        .with_context(|| format!("cannot read Insights under {}", sink.display()))?;
    let mut records: Vec<_> = files.iter().flat_map(|(_, r)| r.iter()).collect();
    records.sort_by(|a, b| {
        (&a.shared_event_id, a.insight_details.state)
            .cmp(&(&b.shared_event_id, b.insight_details.state))
    });
    println!("Insights found:");
    let mut any = false;
    for start in records
        .iter()
        .filter(|r| r.insight_details.state == trailsight_detector::insight::InsightState::Start)
    {
        any = true;
        let d = &start.insight_details;
        let end = records.iter().find(|r| {
            r.shared_event_id == start.shared_event_id
                && r.insight_details.state == trailsight_detector::insight::InsightState::End
        });
        let stats = &end
            .unwrap_or(start)
            .insight_details
            .insight_context
            .statistics;
        let top = end
            .unwrap_or(start)
            .insight_details
            .insight_context
            .attributions
            .as_ref()
            .and_then(|a| a.iter().find(|a| a.attribute == "userIdentityArn"))
            .and_then(|a| a.insight.first())
            .map(|v| format!("{} ({}/min)", v.value, v.average))
            .unwrap_or_default();
        // Every value but the numbers comes from the logs: one escaped line each.
        let lines = [
            format!(
                "  {:?} {}:{}{} in {} {}",
                d.insight_type,
                d.event_source,
                d.event_name,
                d.error_code
                    .as_ref()
                    .map(|e| format!(" errorCode={e}"))
                    .unwrap_or_default(),
                start.recipient_account_id.as_deref().unwrap_or("?"),
                start.aws_region,
            ),
            format!(
                "    start {}  end {}",
                start.event_time,
                end.map_or("(still open)", |e| e.event_time.as_str()),
            ),
            format!(
                "    rate {}/min vs baseline {}/min over {} min",
                stats.insight.average,
                stats.baseline.average,
                stats.baseline_duration.unwrap_or(0),
            ),
            format!("    top userIdentityArn {top}"),
        ];
        for line in lines {
            println!("{}", escaped(line));
        }
    }
    if !any {
        println!("  none");
    }
    println!("\nInsights files:");
    for (key, records) in &files {
        println!(
            "  {} ({} records)",
            escaped(sink.join(key).display()),
            records.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn log_fields_and_messages_cannot_forge_lines() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(escaping_fields())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_writer(move || writer.clone())
            .finish();
        let key = "AWSLogs/x_\u{1b}[2J\nFAKE ERROR: bad.json.gz";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(file = %key, reason = ?"a\u{0}b", n = 3, "unreadable\u{2028}log file {}", "\r");
        });
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            out,
            " WARN unreadable\\u{2028}log file \\r file=AWSLogs/x_\\x1b[2J\\nFAKE ERROR: bad.json.gz reason=\"a\\0b\" n=3\n"
        );
    }
}
