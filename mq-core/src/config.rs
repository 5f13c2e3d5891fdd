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
    /// Hosts after the first in a list such as `kafka://a:9092,b:9092`,
    /// which `Url` cannot hold.
    more_hosts: Vec<String>,
    options: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    url: String,
    #[serde(default)]
    options: BTreeMap<String, toml::Value>,
}

/// The forms `Config` deserializes from: a URL string, or a table with a
/// `url` and `options`.
#[derive(Deserialize)]
#[serde(untagged)]
enum ConfigForm {
    Url(String),
    Table(ConfigFile),
}

impl Config {
    /// Parses a URL; its query parameters become options. The authority
    /// may list several hosts (`kafka://a:9092,b:9092`); see
    /// [`hosts`](Self::hosts).
    pub fn from_url(text: &str) -> Result<Self> {
        // The hosts are split from the text as the URL parser reads it:
        // without leading and trailing control characters and spaces, and
        // without tabs and newlines anywhere.
        let seen: String = text
            .trim_matches(|c: char| c <= ' ')
            .chars()
            .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
            .collect();
        let (single, listed) = split_hosts(&seen);
        let mut more_hosts = Vec::with_capacity(listed.len());
        for host in listed {
            // Kept as the URL parser reads it, like the first host, so the
            // config prints as a URL that parses back to the same hosts.
            let parsed = Url::parse(&format!("x://{host}")).ok();
            match parsed
                .as_ref()
                .and_then(host_port)
                .filter(|_| !host.is_empty())
            {
                Some(host) => more_hosts.push(host),
                None => {
                    return Err(Error::Config(format!(
                        "cannot parse URL {}: {host:?} is not a host[:port]",
                        redact_text(text)
                    )))
                }
            }
        }
        let mut url = Url::parse(&single)
            .map_err(|e| Error::Config(format!("cannot parse URL {}: {e}", redact_text(text))))?;
        let mut options = BTreeMap::new();
        for (k, v) in url.query_pairs() {
            if options.insert(k.to_string(), v.to_string()).is_some() {
                return Err(Error::Config(format!("option {k:?} is given twice")));
            }
        }
        url.set_query(None);
        Ok(Config {
            url,
            more_hosts,
            options,
        })
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
        Self::from_file(file)
    }

    fn from_file(file: ConfigFile) -> Result<Self> {
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

    /// Every `host:port` of the authority, in order (a port is present
    /// only where the URL gives one).
    ///
    /// ```
    /// let cfg: mq_core::Config = "kafka://a:9092,b:9093,c".parse().unwrap();
    /// assert_eq!(cfg.hosts(), ["a:9092", "b:9093", "c"]);
    /// assert_eq!(cfg.to_string(), "kafka://a:9092,b:9093,c");
    /// ```
    pub fn hosts(&self) -> Vec<String> {
        host_port(&self.url)
            .into_iter()
            .chain(self.more_hosts.iter().cloned())
            .collect()
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

/// A `Config` inside an application's own serde configuration: either the
/// URL as a string or a table with `url` and `options`.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct App { broker: mq_core::Config }
/// let app: App = toml::from_str(r#"
///     [broker]
///     url = "kafka://127.0.0.1:9092"
///     options = { "kafka.sasl.password" = "hunter2", partitions = 6 }
/// "#).unwrap();
/// assert_eq!(app.broker.options()["partitions"], "6");
/// assert!(!app.broker.to_string().contains("hunter2"));
/// ```
impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let parsed = match ConfigForm::deserialize(deserializer)? {
            ConfigForm::Url(url) => Config::from_url(&url),
            ConfigForm::Table(file) => Config::from_file(file),
        };
        parsed.map_err(serde::de::Error::custom)
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
            shown.query_pairs_mut().extend_pairs(
                self.options.iter().map(|(name, value)| {
                    (name.as_str(), if is_secret(name) { "***" } else { value })
                }),
            );
        }
        let shown = shown.as_str();
        match (self.more_hosts.is_empty(), authority_end(shown)) {
            (false, Some(end)) => write!(
                f,
                "{}{}{}",
                &shown[..end],
                self.more_hosts
                    .iter()
                    .fold(String::new(), |list, host| list + "," + host),
                &shown[end..]
            ),
            _ => f.write_str(shown),
        }
    }
}

/// A URL's `host:port` (the port only where it has one).
fn host_port(url: &Url) -> Option<String> {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => Some(format!("{host}:{port}")),
        (Some(host), None) => Some(host.to_owned()),
        (None, _) => None,
    }
}

/// Where the authority of URL-like text ends (the index of the `/`, `?` or
/// `#` after it, or the length), when the text has one: after a `://`
/// that ends a scheme. A `://` further on, in a path or a query, starts
/// no authority, and a host list taken from there was read into a URL
/// without one.
fn authority_end(text: &str) -> Option<usize> {
    let scheme_end = text.find("://")?;
    let mut scheme = text[..scheme_end].chars();
    let is_scheme = scheme.next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !is_scheme {
        return None;
    }
    let start = scheme_end + 3;
    Some(
        start
            + text[start..]
                .find(['/', '?', '#'])
                .unwrap_or(text.len() - start),
    )
}

/// Splits `scheme://user@a:1,b:2/path` into `scheme://user@a:1/path` and
/// the further hosts `["b:2"]`. `;` separates hosts too, as RocketMQ
/// writes name-server lists.
fn split_hosts(text: &str) -> (String, Vec<String>) {
    let Some(end) = authority_end(text) else {
        return (text.to_owned(), Vec::new());
    };
    let start = text.find("://").map_or(0, |i| i + 3);
    let authority = &text[start..end];
    let hosts_start = authority.rfind('@').map_or(0, |at| at + 1);
    let mut hosts = authority[hosts_start..].split([',', ';']);
    let first = hosts.next().unwrap_or_default();
    let more: Vec<String> = hosts.map(str::to_owned).collect();
    if more.is_empty() {
        return (text.to_owned(), more);
    }
    let single = format!("{}{}{}", &text[..start + hosts_start], first, &text[end..]);
    (single, more)
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Config({self})")
    }
}

/// Whether an option holds a secret, by its name (`sasl.password`,
/// `client_secret`, `token`, `ssl.key.password`, `api_key`, ...): its value
/// never shows in `Display`, `Debug` or errors.
pub fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "secret", "token", "key", "credential"]
        .iter()
        .any(|marker| name.contains(marker))
}

/// An option's value as errors may show it.
fn shown_value<'a>(name: &str, value: &'a str) -> &'a str {
    if is_secret(name) {
        "***"
    } else {
        value
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
                .map_err(|e| invalid_option(name, &text, e)),
        }
    }

    /// Takes every option whose name starts with `prefix`, returned without
    /// the prefix: the pass-through a driver hands to its client library
    /// unchanged (`kafka.linger.ms=5` gives `linger.ms` → `5` for the
    /// prefix `kafka.`).
    ///
    /// ```
    /// let cfg: mq_core::Config = "kafka://h:9092?kafka.linger.ms=5&partitions=3".parse().unwrap();
    /// let mut reader = cfg.reader();
    /// let native = reader.take_prefixed("kafka.");
    /// assert_eq!(native["linger.ms"], "5");
    /// assert_eq!(reader.take::<u32>("partitions").unwrap(), Some(3));
    /// reader.finish().unwrap();
    /// ```
    pub fn take_prefixed(&mut self, prefix: &str) -> BTreeMap<String, String> {
        let names: Vec<String> = self
            .remaining
            .keys()
            .filter(|name| name.starts_with(prefix) && name.len() > prefix.len())
            .cloned()
            .collect();
        names
            .into_iter()
            .filter_map(|name| {
                let value = self.remaining.remove(&name)?;
                Some((name[prefix.len()..].to_owned(), value))
            })
            .collect()
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
                .map_err(|e| invalid_option(name, &text, e)),
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

fn invalid_option(name: &str, text: &str, reason: impl fmt::Display) -> Error {
    let shown = shown_value(name, text);
    let reason = reason.to_string().replace(text, shown);
    Error::Config(format!("option {name}={shown:?} is invalid: {reason}"))
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
    fn secret_options_are_redacted_everywhere() {
        let cfg = Config::from_url(
            "kafka://h:9092?sasl.password=hunter2&kafka.ssl.key.password=pw2&api_token=t0k&partitions=3",
        )
        .unwrap();
        let shown = format!("{cfg} {cfg:?}");
        for secret in ["hunter2", "pw2", "t0k"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("partitions=3"), "{shown}");
        let err = cfg
            .reader()
            .take_duration("sasl.password")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sasl.password") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn deserializes_from_a_url_or_a_table() {
        #[derive(Deserialize)]
        struct App {
            a: Config,
            b: Config,
        }
        let app: App = toml::from_str(
            "a = \"memory://?partitions=2\"\n[b]\nurl = \"native://./d\"\noptions = { fsync = \"never\" }",
        )
        .unwrap();
        assert_eq!(app.a.options()["partitions"], "2");
        assert_eq!(app.b.scheme(), "native");
        assert_eq!(app.b.options()["fsync"], "never");
        let bad: std::result::Result<App, _> = toml::from_str("a = \"::\"\nb = \"memory://\"");
        assert!(bad.is_err());
    }

    #[test]
    fn host_lists() {
        let cfg = Config::from_url("kafka://u:pw@a:1,b:2/x?acks=all").unwrap();
        assert_eq!(cfg.hosts(), ["a:1", "b:2"]);
        let rocket: Config = "rocketmq://n1:9876;n2:9876".parse().unwrap();
        assert_eq!(rocket.hosts(), ["n1:9876", "n2:9876"]);
        assert_eq!(cfg.to_string(), "kafka://u:***@a:1,b:2/x?acks=all");
        assert_eq!(
            Config::from_url("memory://").unwrap().hosts(),
            Vec::<String>::new()
        );
        let err = Config::from_url("kafka://a:1,b:notaport")
            .unwrap_err()
            .to_string();
        assert!(err.contains("b:notaport"), "{err}");
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
