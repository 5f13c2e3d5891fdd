//! Connection configuration: a URL plus backend options.
//!
//! Switching brokers is a change of URL. Options come from the URL query
//! (`native://./data?fsync=never`), a TOML table, or `MQ_OPT_*` environment
//! variables; each driver takes the options it knows and the rest is an error
//! naming them. Passwords never show in `Debug`, `Display` or errors.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::error::{Error, Result};

/// Where and how to connect.
///
/// ```
/// use mq_core::Config;
/// let cfg: Config = "amqp://app:s3cret@127.0.0.1:5672/%2f?shards=4".parse().unwrap();
/// assert_eq!(cfg.scheme(), "amqp");
/// assert_eq!(cfg.options().get("shards").map(String::as_str), Some("4"));
/// assert!(!format!("{cfg:?} {cfg}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    url: Url,
    options: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    url: String,
    #[serde(default)]
    options: BTreeMap<String, toml::Value>,
}

impl Config {
    /// Parses a URL; its query parameters become options.
    pub fn from_url(text: &str) -> Result<Self> {
        let mut url = Url::parse(text)
            .map_err(|e| Error::Config(format!("cannot parse URL {}: {e}", redact_text(text))))?;
        let mut options = BTreeMap::new();
        for (k, v) in url.query_pairs() {
            if options.insert(k.to_string(), v.to_string()).is_some() {
                return Err(Error::Config(format!("option {k:?} is given twice")));
            }
        }
        url.set_query(None);
        Ok(Config { url, options })
    }

    /// Parses TOML with a `url` and an optional `[options]` table.
    ///
    /// ```
    /// use mq_core::Config;
    /// let cfg = Config::from_toml(r#"
    ///     url = "memory://"
    ///     [options]
    ///     partitions = 8
    /// "#).unwrap();
    /// assert_eq!(cfg.options()["partitions"], "8");
    /// ```
    pub fn from_toml(text: &str) -> Result<Self> {
        let file: ConfigFile =
            toml::from_str(text).map_err(|e| Error::Config(format!("invalid TOML config: {e}")))?;
        let mut config = Config::from_url(&file.url)?;
        for (k, v) in file.options {
            let value = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(Error::Config(format!(
                        "option {k:?} must be a string, number or boolean, not {}",
                        other.type_str()
                    )))
                }
            };
            config.options.insert(k, value);
        }
        Ok(config)
    }

    /// Reads `MQ_URL`, then adds every `MQ_OPT_<NAME>` variable as option `<name>`.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(std::env::vars())
    }

    /// [`from_env`](Self::from_env) over an explicit list of variables.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let url = vars
            .iter()
            .find(|(k, _)| k == "MQ_URL")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| Error::Config("MQ_URL is not set".into()))?;
        let mut config = Config::from_url(&url)?;
        for (k, v) in vars {
            if let Some(name) = k.strip_prefix("MQ_OPT_") {
                config.options.insert(name.to_ascii_lowercase(), v);
            }
        }
        Ok(config)
    }

    /// The URL scheme, which picks the backend.
    pub fn scheme(&self) -> &str {
        self.url.scheme()
    }

    /// The URL without its query. Contains the password: never log it; use
    /// `Display` for a redacted form.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The options not yet taken.
    pub fn options(&self) -> &BTreeMap<String, String> {
        &self.options
    }

    /// Sets an option, as if it were in the URL query.
    pub fn with_option(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.insert(name.into(), value.into());
        self
    }

    /// Starts reading options; see [`OptionReader`].
    pub fn reader(&self) -> OptionReader {
        OptionReader {
            remaining: self.options.clone(),
            scheme: self.scheme().to_owned(),
        }
    }
}

impl FromStr for Config {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Config::from_url(s)
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.url.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        if !self.options.is_empty() {
            shown.query_pairs_mut().extend_pairs(self.options.iter());
        }
        f.write_str(shown.as_str())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Config({self})")
    }
}

/// Replaces a password in URL-like text by `***`, for error messages about
/// URLs that did not parse.
pub fn redact_text(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_owned();
    };
    let rest = &text[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &text[..scheme_end + 3],
            &authority[..colon],
            &rest[at..]
        ),
        _ => text.to_owned(),
    }
}

/// Takes typed options one by one; [`finish`](OptionReader::finish) fails on
/// any option nobody took, naming it.
pub struct OptionReader {
    remaining: BTreeMap<String, String>,
    scheme: String,
}

impl OptionReader {
    /// Takes an option and parses it with `FromStr`.
    pub fn take<T: FromStr>(&mut self, name: &str) -> Result<Option<T>>
    where
        T::Err: fmt::Display,
    {
        match self.remaining.remove(name) {
            None => Ok(None),
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|e| Error::Config(format!("option {name}={text:?} is invalid: {e}"))),
        }
    }

    /// Takes an option, or `default` when it is absent.
    pub fn take_or<T: FromStr>(&mut self, name: &str, default: T) -> Result<T>
    where
        T::Err: fmt::Display,
    {
        Ok(self.take(name)?.unwrap_or(default))
    }

    /// Takes a duration option, or `default` when it is absent.
    pub fn take_duration_or(&mut self, name: &str, default: Duration) -> Result<Duration> {
        Ok(self.take_duration(name)?.unwrap_or(default))
    }

    /// Takes an option holding a duration such as `250ms`, `5s`, `2m`, `1h`.
    pub fn take_duration(&mut self, name: &str) -> Result<Option<Duration>> {
        match self.remaining.remove(name) {
            None => Ok(None),
            Some(text) => parse_duration(&text)
                .map(Some)
                .map_err(|e| Error::Config(format!("option {name}={text:?} is invalid: {e}"))),
        }
    }

    /// Fails if options remain, naming each.
    pub fn finish(self) -> Result<()> {
        if self.remaining.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = self.remaining.keys().map(String::as_str).collect();
        Err(Error::Config(format!(
            "unknown option{} for {}://: {}",
            if names.len() > 1 { "s" } else { "" },
            self.scheme,
            names.join(", ")
        )))
    }
}

/// Parses a duration such as `250ms`, `5s`, `2m`, `1h 30m`, or a bare number of milliseconds.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 250ms, 5s, 2m: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_options_and_redaction() {
        let cfg = Config::from_url("redis://:hunter2@127.0.0.1:6379/0?block=5s").unwrap();
        assert_eq!(cfg.scheme(), "redis");
        let mut r = cfg.reader();
        assert_eq!(
            r.take_duration("block").unwrap(),
            Some(Duration::from_secs(5))
        );
        r.finish().unwrap();
        assert!(!cfg.to_string().contains("hunter2"));
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn unknown_options_are_named() {
        let cfg = Config::from_url("memory://?partitons=3").unwrap();
        let mut r = cfg.reader();
        assert_eq!(r.take::<u32>("partitions").unwrap(), None);
        let err = r.finish().unwrap_err().to_string();
        assert!(err.contains("partitons"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let cfg = Config::from_url("memory://?partitions=many").unwrap();
        let err = cfg
            .reader()
            .take::<u32>("partitions")
            .unwrap_err()
            .to_string();
        assert!(err.contains("partitions") && err.contains("many"), "{err}");
    }

    #[test]
    fn unparsable_url_is_redacted() {
        let err = Config::from_url("amqp://user:pw@[bad/")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("pw@"), "{err}");
    }

    #[test]
    fn env_vars() {
        let cfg = Config::from_vars([
            ("MQ_URL".to_string(), "memory://".to_string()),
            ("MQ_OPT_PARTITIONS".to_string(), "3".to_string()),
            ("MQ_REQUIRE_BROKERS".to_string(), "1".to_string()),
        ])
        .unwrap();
        assert_eq!(cfg.options().len(), 1);
        assert_eq!(cfg.options()["partitions"], "3");
        assert!(Config::from_vars([]).is_err());
    }

    #[test]
    fn toml_rejects_unknown_keys() {
        assert!(Config::from_toml("url = \"memory://\"\nbogus = 1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_millis(15)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
