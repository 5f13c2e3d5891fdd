//! `mq`: the command-line tool of mq.
//!
//! ```text
//! mq --url native://./data topics
//! mq --url redis://127.0.0.1:6379/0 lag orders
//! mq --url redis://127.0.0.1:6379/0 dlq redrive orders --dry-run
//! mq --url kafka://127.0.0.1:9092 transactions list --open
//! mq bridge --from redis://127.0.0.1:6379/0 --to native://./data --topic orders --verify
//! mq console --url native://./data --url redis://127.0.0.1:6379/0 --allow-actions
//! mq bench --url native://./bench-data --url redis://127.0.0.1:6379 --messages 1000000
//! ```

mod bench;
mod ops;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mq",
    version,
    about = "Operate and benchmark mq backends by URL"
)]
struct Cli {
    #[command(flatten)]
    target: ops::Target,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the same workload through the SDK on each URL and prints one table.
    Bench(bench::BenchArgs),
    /// Serves a web console over every --url: topics, lag, messages, dead letters.
    Console(mq_console::ConsoleArgs),
    /// Copies a topic from one backend to another while both run (migrations).
    Bridge(ops::bridge::BridgeArgs),
    #[command(flatten)]
    Ops(ops::OpsCommand),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(args).await,
        Command::Console(mut args) => {
            // `mq --url URL console` works too.
            if args.urls.is_empty() {
                args.urls.extend(cli.target.url.clone());
            }
            if let Err(error) = mq_console::run(args).await {
                eprintln!("mq: {error}");
                return std::process::ExitCode::FAILURE;
            }
            Ok(())
        }
        Command::Bridge(args) => ops::bridge::run(cli.target.format, args).await,
        Command::Ops(command) => ops::run(&cli.target, command).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mq: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
