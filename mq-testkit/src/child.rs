//! What the kill scenarios share: a second process to SIGKILL, which is
//! this very test binary re-run with one ignored test selected and its
//! instructions in an environment variable, and the checks around it.

use std::future::Future;
use std::io::{BufRead, BufReader, Lines};
use std::process::{ChildStdout, Command, ExitStatus, Stdio};

use mq_core::Client;

use crate::require_brokers;

/// A run id short enough for every backend's name limits.
pub(crate) fn short_run() -> String {
    let run = uuid::Uuid::now_v7().simple().to_string();
    run[run.len() - 12..].to_owned()
}

/// Whether the broker behind `url` answers: connects once and closes. On
/// failure prints why `scenario` skips, or panics under
/// `MQ_REQUIRE_BROKERS=1`.
pub(crate) async fn reachable<F, Fut>(scenario: &str, url: &str, connect: &F) -> bool
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = mq_core::Result<Client>>,
{
    match connect(url.to_owned()).await {
        Ok(client) => {
            let _ = client.close().await;
            true
        }
        Err(error) if require_brokers() => {
            panic!("MQ_REQUIRE_BROKERS=1 but the broker is unreachable: {error}")
        }
        Err(error) => {
            eprintln!("SKIPPED {scenario}: no broker ({error})");
            false
        }
    }
}

/// The child's instructions: the `N` lines of `env`.
pub(crate) fn instructions<const N: usize>(env: &str, parent: &str) -> [String; N] {
    let spec = std::env::var(env).unwrap_or_else(|_| panic!("run by {parent}, with {env} set"));
    spec.lines()
        .map(str::to_owned)
        .collect::<Vec<_>>()
        .try_into()
        .unwrap_or_else(|_| panic!("{env} must hold {N} lines"))
}

/// The ignored test `test` of this binary, running in its own process.
pub(crate) struct ChildTest {
    process: std::process::Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl ChildTest {
    /// Starts `test` with `spec` (one line each) in `env`.
    pub(crate) fn start(test: &str, env: &str, spec: &[&str]) -> Self {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut process = Command::new(exe)
            .args([
                test,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(env, spec.join("\n"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the child process");
        let stdout = process.stdout.take().expect("child stdout");
        ChildTest {
            process,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The text after `marker` on the child's next line that has it, or
    /// `None` once the child's output ends. libtest prints the test's name
    /// on the line of the child's first output, hence the search.
    pub(crate) fn next_marked(&mut self, marker: &str) -> Option<String> {
        for line in self.lines.by_ref() {
            let line = line.expect("read the child's output");
            if let Some(at) = line.find(marker) {
                return Some(line[at + marker.len()..].trim().to_owned());
            }
        }
        None
    }

    /// SIGKILLs the child (no destructor, no flush, no goodbye) and reaps it.
    pub(crate) fn kill(mut self) -> ExitStatus {
        let _ = self.process.kill();
        self.process.wait().expect("reap the child")
    }
}
