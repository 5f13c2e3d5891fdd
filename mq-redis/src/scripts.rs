//! The Lua scripts, loaded once per driver. Each does, atomically inside
//! Redis, a step that would otherwise race between clients; see the
//! comment at the top of each `.lua` file.

use redis::Script;

/// A script and its source: `EVALSHA` where a `NOSCRIPT` can be retried,
/// `EVAL` inside `MULTI`, where it could not.
pub(crate) struct Lua {
    pub(crate) script: Script,
    source: &'static str,
}

impl Lua {
    fn new(source: &'static str) -> Self {
        Lua {
            script: Script::new(source),
            source,
        }
    }

    /// An `EVALSHA` command for a pipeline; the caller loads the scripts
    /// when the pipeline fails with `NOSCRIPT`, and retries.
    pub(crate) fn evalsha(&self, keys: &[&str], args: Vec<Vec<u8>>) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash()).arg(keys.len()).arg(keys);
        for a in args {
            cmd.arg(a);
        }
        cmd
    }

    /// An `EVAL` command carrying the source, for use inside `MULTI`.
    pub(crate) fn eval(&self, keys: &[&str], args: Vec<Vec<u8>>) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(self.source).arg(keys.len()).arg(keys);
        for a in args {
            cmd.arg(a);
        }
        cmd
    }
}

/// The driver's scripts. [`Script`] sends `EVALSHA` and reloads the script
/// on `NOSCRIPT` (after a server restart the script cache is empty).
pub(crate) struct Scripts {
    /// Idempotent publish: `SET NX PX` of the key together with the write.
    pub(crate) publish_once: Lua,
    /// Delayed publish into the topic's sorted set.
    pub(crate) schedule: Lua,
    /// Moves due delayed messages to their streams.
    pub(crate) promote: Lua,
    /// Which messages of an interrupted send the stream already holds.
    pub(crate) find_ids: Lua,
    /// Claims pending messages with their delivery counts.
    pub(crate) claim: Lua,
    /// Takes or renews a partition lock.
    pub(crate) lock: Lua,
    /// Releases a partition lock.
    pub(crate) unlock: Lua,
    /// Creates a topic's settings if missing and reads them.
    pub(crate) ensure_topic: Lua,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            publish_once: Lua::new(include_str!("lua/publish_once.lua")),
            schedule: Lua::new(include_str!("lua/schedule.lua")),
            promote: Lua::new(include_str!("lua/promote.lua")),
            find_ids: Lua::new(include_str!("lua/find_ids.lua")),
            claim: Lua::new(include_str!("lua/claim.lua")),
            lock: Lua::new(include_str!("lua/lock.lua")),
            unlock: Lua::new(include_str!("lua/unlock.lua")),
            ensure_topic: Lua::new(include_str!("lua/ensure_topic.lua")),
        }
    }

    /// Every script, to load them all after a `NOSCRIPT` in a pipeline.
    pub(crate) fn all(&self) -> [&Lua; 8] {
        [
            &self.publish_once,
            &self.schedule,
            &self.promote,
            &self.find_ids,
            &self.claim,
            &self.lock,
            &self.unlock,
            &self.ensure_topic,
        ]
    }
}
