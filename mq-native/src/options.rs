//! Engine settings and their parsing from `native://` URLs and config tables.

use std::path::PathBuf;
use std::time::Duration;

use mq_core::config::parse_duration;
use mq_core::driver::options::{DEDUP_WINDOW, MAX_MESSAGE_BYTES, PARTITIONS};
use mq_core::{Config, Error, Result};

/// When appends are fsynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Every send is acknowledged after an fsync covering it; concurrent
    /// sends share one fsync (group commit). The default.
    Always,
    /// Sends are acknowledged once written; an fsync runs at most this often.
    Interval(Duration),
    /// Sends are acknowledged once written; fsync only at segment roll,
    /// checkpoint and close.
    Never,
}

impl std::str::FromStr for Fsync {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "always" => Ok(Fsync::Always),
            "never" => Ok(Fsync::Never),
            other => match other.strip_prefix("interval:") {
                Some(every) => {
                    let every = parse_duration(every)?;
                    if every.is_zero() {
                        return Err("the interval must be positive".into());
                    }
                    Ok(Fsync::Interval(every))
                }
                None => Err("use always, never or interval:<ms>".into()),
            },
        }
    }
}

/// Settings of a native engine.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// The data directory.
    pub path: PathBuf,
    /// Durability of sends (`fsync`).
    pub fsync: Fsync,
    /// Partitions of topics created on first use (`partitions`, default 4).
    pub partitions: u32,
    /// Size at which a new log segment starts (`segment_bytes`, default 128 MiB).
    pub segment_bytes: u64,
    /// Largest message accepted (`max_message_bytes`, default 4 MiB).
    pub max_message_bytes: usize,
    /// How long idempotency keys are remembered (`dedup_window`, default 24h).
    pub dedup_window: Duration,
    /// Delete whole segments older than this (`retention`, default 7 days; `0` keeps forever).
    pub retention: Option<Duration>,
    /// Delete the oldest segments while the log is larger (`retention_bytes`, default unlimited).
    pub retention_bytes: Option<u64>,
    /// Create unknown topics on first use (`auto_create`, default true).
    pub auto_create: bool,
    /// How often indexes, offsets and the dedup journal are checkpointed
    /// (`checkpoint_interval`, default 1s); bounds the log rescanned at open.
    pub checkpoint_interval: Duration,
    /// How long a prepared (half) message waits for its producer's commit
    /// or rollback before a checker of its group is asked
    /// (`half_check_after`, default 6s, RocketMQ's `transactionTimeout`).
    pub half_check_after: Duration,
    /// How long after a check (or an unknown answer) an unresolved half
    /// message is checked again (`half_check_interval`, default 6s).
    pub half_check_interval: Duration,
}

impl Options {
    /// Defaults for a directory.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Options {
            path: path.into(),
            fsync: Fsync::Always,
            partitions: 4,
            segment_bytes: 128 * 1024 * 1024,
            max_message_bytes: 4 * 1024 * 1024,
            dedup_window: Duration::from_secs(24 * 3600),
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
            auto_create: true,
            checkpoint_interval: Duration::from_secs(1),
            half_check_after: Duration::from_secs(6),
            half_check_interval: Duration::from_secs(6),
        }
    }

    /// From a `native://PATH?options` config; unknown options are an error naming them.
    pub fn from_config(config: &Config) -> Result<Self> {
        if config.scheme() != "native" {
            return Err(Error::Config(format!(
                "the native driver takes native:// URLs, not {}://",
                config.scheme()
            )));
        }
        let mut options = Options::new(path_of(config)?);
        let mut r = config.reader();
        if let Some(fsync) = r.take::<Fsync>("fsync")? {
            options.fsync = fsync;
        }
        if let Some(p) = r.take::<u32>(PARTITIONS)? {
            options.partitions = p;
        }
        if let Some(b) = r.take::<u64>("segment_bytes")? {
            options.segment_bytes = b;
        }
        if let Some(m) = r.take::<usize>(MAX_MESSAGE_BYTES)? {
            options.max_message_bytes = m;
        }
        if let Some(w) = r.take_duration(DEDUP_WINDOW)? {
            options.dedup_window = w;
        }
        if let Some(age) = r.take_duration("retention")? {
            options.retention = (!age.is_zero()).then_some(age);
        }
        if let Some(bytes) = r.take::<u64>("retention_bytes")? {
            options.retention_bytes = (bytes > 0).then_some(bytes);
        }
        if let Some(auto) = r.take::<bool>("auto_create")? {
            options.auto_create = auto;
        }
        if let Some(every) = r.take_duration("checkpoint_interval")? {
            options.checkpoint_interval = every;
        }
        if let Some(after) = r.take_duration(HALF_CHECK_AFTER)? {
            options.half_check_after = after;
        }
        if let Some(every) = r.take_duration(HALF_CHECK_INTERVAL)? {
            options.half_check_interval = every;
        }
        r.finish()?;
        options.validate()?;
        Ok(options)
    }

    /// Checks the settings, naming a bad one and its value. Durations are
    /// not bounded above: a huge one saturates (a checkpoint interval of
    /// `Duration::MAX` checkpoints only at close).
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &str, value: &dyn std::fmt::Display, why: &str| {
            Err(Error::Config(format!(
                "option {name}={value} is invalid: {why}"
            )))
        };
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return bad(PARTITIONS, &self.partitions, PARTITIONS_RANGE);
        }
        if self.segment_bytes < 4096 {
            return bad("segment_bytes", &self.segment_bytes, "use at least 4096");
        }
        if !(1..=MAX_MESSAGE_LIMIT).contains(&self.max_message_bytes) {
            return bad(
                MAX_MESSAGE_BYTES,
                &self.max_message_bytes,
                "use 1 to 268435456",
            );
        }
        if self.checkpoint_interval.is_zero() {
            return bad("checkpoint_interval", &"0", "use a positive duration");
        }
        if self.half_check_interval.is_zero() {
            return bad(HALF_CHECK_INTERVAL, &"0", "use a positive duration");
        }
        if self.fsync == Fsync::Interval(Duration::ZERO) {
            return bad("fsync", &"interval:0", "the interval must be positive");
        }
        Ok(())
    }
}

const HALF_CHECK_AFTER: &str = "half_check_after";
const HALF_CHECK_INTERVAL: &str = "half_check_interval";

/// The most partitions a topic may have: each is an index file and
/// in-memory state, created with the topic.
pub const MAX_PARTITIONS: u32 = 4096;

/// What to do about a partition count out of range.
pub(crate) const PARTITIONS_RANGE: &str = "use 1 to 4096";

/// The largest `max_message_bytes` accepted.
const MAX_MESSAGE_LIMIT: usize = 256 * 1024 * 1024;

impl Options {
    /// The names of the settings (all but the path) where `other` differs:
    /// one engine serves every opener of a directory, so they must agree.
    pub(crate) fn differences(&self, other: &Options) -> Vec<&'static str> {
        let mut differ = Vec::new();
        let mut check = |name, same: bool| {
            if !same {
                differ.push(name);
            }
        };
        check("fsync", self.fsync == other.fsync);
        check(PARTITIONS, self.partitions == other.partitions);
        check("segment_bytes", self.segment_bytes == other.segment_bytes);
        check(
            MAX_MESSAGE_BYTES,
            self.max_message_bytes == other.max_message_bytes,
        );
        check(DEDUP_WINDOW, self.dedup_window == other.dedup_window);
        check("retention", self.retention == other.retention);
        check(
            "retention_bytes",
            self.retention_bytes == other.retention_bytes,
        );
        check("auto_create", self.auto_create == other.auto_create);
        check(
            "checkpoint_interval",
            self.checkpoint_interval == other.checkpoint_interval,
        );
        check(
            HALF_CHECK_AFTER,
            self.half_check_after == other.half_check_after,
        );
        check(
            HALF_CHECK_INTERVAL,
            self.half_check_interval == other.half_check_interval,
        );
        differ
    }
}

/// `native://./data` is relative, `native:///abs/path` absolute.
fn path_of(config: &Config) -> Result<PathBuf> {
    let url = config.url();
    let host = url.host_str().unwrap_or_default();
    let path = percent_encoding::percent_decode_str(url.path())
        .decode_utf8()
        .map_err(|e| Error::Config(format!("the path of {config} is not UTF-8: {e}")))?;
    let host = percent_encoding::percent_decode_str(host)
        .decode_utf8()
        .map_err(|e| Error::Config(format!("the path of {config} is not UTF-8: {e}")))?;
    let full = format!("{host}{path}");
    if full.is_empty() {
        return Err(Error::Config(format!(
            "{config} names no directory: use native://./data or native:///absolute/path"
        )));
    }
    Ok(PathBuf::from(full))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Options> {
        Options::from_config(&Config::from_url(url)?)
    }

    #[test]
    fn paths_and_options() {
        assert_eq!(
            parse("native://./data").unwrap().path,
            PathBuf::from("./data")
        );
        assert_eq!(
            parse("native:///var/lib/mq").unwrap().path,
            PathBuf::from("/var/lib/mq")
        );
        let o = parse("native://./d?fsync=interval:5ms&partitions=8&retention=0").unwrap();
        assert_eq!(o.fsync, Fsync::Interval(Duration::from_millis(5)));
        assert_eq!(o.partitions, 8);
        assert_eq!(o.retention, None);
        let o = parse("native://./d?half_check_after=1s&half_check_interval=300ms").unwrap();
        assert_eq!(o.half_check_after, Duration::from_secs(1));
        assert_eq!(o.half_check_interval, Duration::from_millis(300));
        assert_eq!(
            parse("native://./d?fsync=never").unwrap().fsync,
            Fsync::Never
        );
    }

    #[test]
    fn bad_options_are_named() {
        let e = parse("native://./d?fsynk=never").unwrap_err().to_string();
        assert!(e.contains("fsynk"), "{e}");
        let e = parse("native://./d?fsync=sometimes")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sometimes"), "{e}");
        assert!(parse("native://").is_err());
        let e = parse("native://./d?half_check_interval=0s")
            .unwrap_err()
            .to_string();
        assert!(e.contains("half_check_interval"), "{e}");
        let e = parse("native://./d?half_check_after=soon")
            .unwrap_err()
            .to_string();
        assert!(e.contains("half_check_after"), "{e}");
    }
}
