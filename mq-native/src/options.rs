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
            if p == 0 {
                return Err(Error::Config(format!(
                    "option {PARTITIONS}=0 is invalid: use at least 1"
                )));
            }
            options.partitions = p;
        }
        if let Some(b) = r.take::<u64>("segment_bytes")? {
            if b < 4096 {
                return Err(Error::Config(format!(
                    "option segment_bytes={b} is invalid: use at least 4096"
                )));
            }
            options.segment_bytes = b;
        }
        if let Some(m) = r.take::<usize>(MAX_MESSAGE_BYTES)? {
            if m == 0 || m > 256 * 1024 * 1024 {
                return Err(Error::Config(format!(
                    "option {MAX_MESSAGE_BYTES}={m} is invalid: use 1 to 268435456"
                )));
            }
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
            if every.is_zero() {
                return Err(Error::Config(
                    "option checkpoint_interval=0 is invalid: use a positive duration".into(),
                ));
            }
            options.checkpoint_interval = every;
        }
        r.finish()?;
        Ok(options)
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
    }
}
