//! What the `mq` command tests share: running the built binary with a
//! time limit and reading its JSON lines.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest any one command may run.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// The `mq` binary on one backend.
pub struct Mq {
    pub url: String,
}

/// Runs `mq ARGS` (no `--url`) to its end, failing the test when it does
/// not finish within [`COMMAND_LIMIT`].
pub fn run_mq(args: &[&str]) -> Run {
    let child = Command::new(env!("CARGO_BIN_EXE_mq"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mq");
    finish(child, args, || false)
}

/// What a finished command printed.
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Mq {
    /// Starts `mq --url URL --format json ARGS`, with `stdin` piped in.
    pub fn spawn(&self, args: &[&str], stdin: &str) -> Child {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mq"))
            .args(["--url", &self.url, "--format", "json"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mq");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin.as_bytes()).expect("write stdin");
        child
    }

    /// Runs a command to its end, whatever its outcome.
    pub fn run(&self, args: &[&str]) -> Run {
        finish(self.spawn(args, ""), args, || false)
    }

    /// Runs a command to its end and returns its JSON lines, failing the
    /// test when it fails.
    pub fn json(&self, args: &[&str], stdin: &str) -> Vec<Value> {
        let run = finish(self.spawn(args, stdin), args, || false);
        assert!(run.success, "mq {args:?} failed: {}", run.stderr);
        json_lines(&run.stdout)
    }
}

/// Waits for `child` (up to [`COMMAND_LIMIT`]), calling `meanwhile` every
/// few milliseconds; kills it at the limit and fails the test.
pub fn finish(mut child: Child, args: &[&str], mut meanwhile: impl FnMut() -> bool) -> Run {
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    // Read while it runs, so a full pipe never blocks it.
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + COMMAND_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for mq") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "mq {args:?} ran over {COMMAND_LIMIT:?}: {}",
                err.join().unwrap_or_default()
            );
        }
        if !meanwhile() {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    Run {
        success: status.success(),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// A name unique to this run.
pub fn unique(what: &str) -> String {
    format!("cli-{what}-{}", uuid::Uuid::now_v7().simple())
}

/// Skips a test without its broker, or fails under `MQ_REQUIRE_BROKERS=1`.
pub fn skip_without_broker(url: &str, why: &str) {
    if std::env::var("MQ_REQUIRE_BROKERS").is_ok_and(|v| v == "1") {
        panic!("MQ_REQUIRE_BROKERS=1 but {url} is unreachable: {why}");
    }
    eprintln!("SKIPPED: no broker at {url} ({why})");
}
