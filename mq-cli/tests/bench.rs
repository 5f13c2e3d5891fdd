//! `mq bench` end to end on the memory backend.

use std::process::Command;

#[test]
fn bench_prints_one_json_object_per_url() {
    let output = Command::new(env!("CARGO_BIN_EXE_mq"))
        .args([
            "bench",
            "--url",
            "memory://",
            "--url",
            "memory://?partitions=2",
            "--messages",
            "20000",
            "--latency-seconds",
            "1",
            "--rate",
            "5000",
            "--format",
            "json",
        ])
        .output()
        .expect("run mq");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("utf8");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for line in &lines {
        for field in [
            "produce_msgs_per_s",
            "produce_mb_per_s",
            "consume_msgs_per_s",
        ] {
            assert!(
                line[field].as_f64().is_some_and(|v| v > 0.0),
                "{field} in {line}"
            );
        }
        for field in ["p50_us", "p99_us", "p999_us", "peak_rss_bytes"] {
            assert!(
                line[field].as_u64().is_some_and(|v| v > 0),
                "{field} in {line}"
            );
        }
        assert!(line["p50_us"].as_u64() <= line["p999_us"].as_u64());
    }
    assert_eq!(lines[1]["url"], "memory://?partitions=2");
}

#[test]
fn bench_table_and_bad_input() {
    let output = Command::new(env!("CARGO_BIN_EXE_mq"))
        .args([
            "bench",
            "--url",
            "memory://",
            "--messages",
            "5000",
            "--latency-seconds",
            "0",
        ])
        .output()
        .expect("run mq");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("utf8");
    assert!(stdout.contains("| url | produce msgs/s |"), "{stdout}");
    assert!(stdout.contains("| memory:// |"), "{stdout}");

    let output = Command::new(env!("CARGO_BIN_EXE_mq"))
        .args(["bench", "--url", "memory://", "--producers", "0"])
        .output()
        .expect("run mq");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("producers"));

    let output = Command::new(env!("CARGO_BIN_EXE_mq"))
        .args([
            "bench",
            "--url",
            "amqp://u:hunter2@127.0.0.1:1/%2f",
            "--messages",
            "10",
        ])
        .output()
        .expect("run mq");
    assert!(!output.status.success());
    assert!(!String::from_utf8_lossy(&output.stderr).contains("hunter2"));
}
