//! Printing results: a table for people, JSON lines for scripts.

use serde::Serialize;

use super::BenchArgs;

/// What one URL measured.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct BenchResult {
    pub url: String,
    pub produce_msgs_per_s: f64,
    pub produce_mb_per_s: f64,
    pub consume_msgs_per_s: f64,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub p999_us: Option<u64>,
    pub peak_rss_bytes: Option<u64>,
}

impl BenchResult {
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

pub(crate) fn table(args: &BenchArgs, results: &[BenchResult]) -> String {
    let mut out = format!(
        "\n{} messages of {} bytes, {} producers, batches of {}, {} keys, {} partitions; consumer concurrency {}; latency at {} msgs/s for {} s\n\n",
        args.messages, args.size, args.producers, args.batch, args.keys, args.partitions, args.concurrency, args.rate, args.latency_seconds
    );
    out.push_str("| url | produce msgs/s | produce MB/s | consume msgs/s | p50 us | p99 us | p999 us | peak RSS MiB |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in results {
        out.push_str(&format!(
            "| {} | {:.0} | {:.1} | {:.0} | {} | {} | {} | {} |\n",
            r.url,
            r.produce_msgs_per_s,
            r.produce_mb_per_s,
            r.consume_msgs_per_s,
            opt(r.p50_us),
            opt(r.p99_us),
            opt(r.p999_us),
            r.peak_rss_bytes.map_or_else(
                || "-".to_owned(),
                |b| format!("{:.0}", b as f64 / 1048576.0)
            ),
        ));
    }
    out
}
