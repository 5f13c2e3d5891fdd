//! The everyday commands: topics, groups, lag, produce, consume, tail,
//! dead letters and hung transactions, against any backend by URL (`--url`
//! or `MQ_URL`), and `bridge` between two backends.

pub mod bridge;
mod consume;
mod dlq;
mod output;
mod produce;
mod topics;
mod transactions;

use clap::{Args, Subcommand};

pub(crate) use output::Format;

/// Where to connect and how to print; shared by every command.
#[derive(Args, Clone, Debug)]
pub struct Target {
    /// Backend URL (or set `MQ_URL`).
    #[arg(long, env = "MQ_URL")]
    pub url: Option<String>,
    /// Output: a table for people, JSON for scripts.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

impl Target {
    async fn connect(&self) -> mq::Result<mq::Client> {
        let url = self
            .url
            .as_deref()
            .ok_or_else(|| mq::Error::Config("no backend URL: pass --url or set MQ_URL".into()))?;
        mq::connect(url).await
    }
}

/// The commands of this module.
#[derive(Subcommand, Debug)]
pub enum OpsCommand {
    /// Lists, creates or deletes topics.
    Topics(topics::TopicsArgs),
    /// Lists the consumer groups of a topic, with their lag.
    Groups(topics::GroupsArgs),
    /// Backlog per partition of a group (or of every group) on a topic.
    Lag(topics::LagArgs),
    /// Publishes messages: one argument, or one per line of a file or stdin.
    Produce(produce::ProduceArgs),
    /// Reads messages as JSON lines, in a group or a throwaway reader.
    Consume(consume::ConsumeArgs),
    /// Follows a topic from now on, without joining any group of yours.
    Tail(consume::TailArgs),
    /// Inspects, redrives and purges dead letters.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Lists producer transactions and aborts hung ones (Kafka).
    #[command(subcommand)]
    Transactions(transactions::TransactionsCommand),
}

/// Runs one command.
pub async fn run(target: &Target, command: OpsCommand) -> mq::Result<()> {
    let client = target.connect().await?;
    let result = match command {
        OpsCommand::Topics(args) => topics::topics(&client, target.format, args).await,
        OpsCommand::Groups(args) => topics::groups(&client, target.format, args).await,
        OpsCommand::Lag(args) => topics::lag(&client, target.format, args).await,
        OpsCommand::Produce(args) => produce::produce(&client, target.format, args).await,
        OpsCommand::Consume(args) => consume::consume(&client, args).await,
        OpsCommand::Tail(args) => consume::tail(&client, args).await,
        OpsCommand::Dlq(command) => dlq::run(&client, target.format, command).await,
        OpsCommand::Transactions(command) => {
            transactions::run(&client, target.format, command).await
        }
    };
    let closed = client.close().await;
    result.and(closed)
}
