//! `mq bench`: produce, consume and latency phases through the SDK, one URL
//! after another, so backends are compared on one workload in one run.

mod report;
mod rss;
mod workload;

use clap::{Args, ValueEnum};

pub(crate) use report::BenchResult;

/// Options of `mq bench`.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Backend URL; repeat to compare several in one run.
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// Messages in the produce and consume phases.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Concurrent producer tasks.
    #[arg(long, default_value_t = 4)]
    pub producers: usize,
    /// Distinct ordering keys (0: no keys).
    #[arg(long, default_value_t = 1_000)]
    pub keys: u64,
    /// Messages per `send_batch` call.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Partitions of the benchmark topics.
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// Handler concurrency of the consumer.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Publish rate of the latency phase, messages per second.
    #[arg(long, default_value_t = 50_000)]
    pub rate: u64,
    /// Seconds the latency phase runs (0 skips it).
    #[arg(long, default_value_t = 5)]
    pub latency_seconds: u64,
    /// Output: a table, or one JSON object per URL.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One human-readable table.
    Table,
    /// One JSON object per URL and line.
    Json,
}

/// Runs the benchmark on every URL and prints the results.
pub async fn run(args: BenchArgs) -> mq::Result<()> {
    validate(&args)?;
    let mut results = Vec::new();
    let mut failed = false;
    for url in &args.urls {
        match workload::bench_url(url, &args).await {
            Ok(result) => {
                if args.format == Format::Json {
                    println!("{}", result.to_json());
                }
                results.push(result);
            }
            Err(error) => {
                failed = true;
                eprintln!(
                    "mq bench: {}: {error}",
                    mq::Config::from_url(url)
                        .map_or_else(|_| "(invalid URL)".to_owned(), |c| c.to_string())
                );
            }
        }
    }
    if args.format == Format::Table {
        print!("{}", report::table(&args, &results));
    }
    if failed {
        return Err(mq::Error::Rejected("some URLs failed; see above".into()));
    }
    Ok(())
}

fn validate(args: &BenchArgs) -> mq::Result<()> {
    let positive = [
        ("messages", args.messages as usize),
        ("producers", args.producers),
        ("batch", args.batch),
        ("concurrency", args.concurrency),
        ("partitions", args.partitions as usize),
    ];
    for (name, value) in positive {
        if value == 0 {
            return Err(mq::Error::invalid(name, "0", "must be at least 1"));
        }
    }
    if args.size < 8 {
        return Err(mq::Error::invalid(
            "size",
            args.size.to_string(),
            "must be at least 8 bytes (the latency phase stamps the send time in the payload)",
        ));
    }
    if args.latency_seconds > 0 && args.rate == 0 {
        return Err(mq::Error::invalid(
            "rate",
            "0",
            "must be at least 1 when the latency phase runs",
        ));
    }
    Ok(())
}
