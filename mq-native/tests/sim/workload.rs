//! The seeded workload run against an engine on the simulated file system
//! until the power goes.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mq_core::driver::{Driver, DriverSubscription, HalfOutcome, StartFrom, SubscribeSpec};
use mq_core::{Message, MessageId, TopicSpec};
use mq_native::fs::sim::{Rng, SimFs};
use mq_native::NativeDriver;

use super::model::{Ack, Ephemeral, Fate, Half, Model, Sent};

/// The topics every seed uses and their partitions; groups consume them.
pub const TOPICS: [(&str, u32); 2] = [("a", 2), ("b", 3)];
/// The consumer groups.
pub const GROUPS: [&str; 2] = ["g1", "g2"];
/// The producer group of half messages.
pub const HALF_GROUP: &str = "hp";
const EPHEMERAL: [&str; 3] = ["e0", "e1", "e2"];

/// One seed's world before the crash.
pub struct World {
    pub seed: u64,
    pub sim: SimFs,
    pub driver: NativeDriver,
    pub rng: Rng,
    pub model: Model,
    pub subs: Vec<(String, Box<dyn DriverSubscription>)>,
    /// Messages numbered for their ids.
    pub next: u64,
    /// Long delays fall due then (after the workload ends).
    pub long_due: SystemTime,
    pub long_delays: bool,
    pub interval: bool,
    /// Violations seen before the crash (a duplicate key not recognised, a
    /// delay delivered early).
    pub early: Vec<String>,
}

/// How an operation ended.
pub enum Step {
    Go,
    Crashed,
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

impl World {
    fn id(&mut self) -> MessageId {
        self.next += 1;
        MessageId::from_uuid(uuid::Uuid::from_u128(
            (u128::from(self.seed) << 64) | u128::from(self.next),
        ))
    }

    /// An unexpected error unless the power is gone.
    fn outcome<T>(&self, what: &str, r: mq_core::Result<T>) -> Result<Option<T>, String> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(_) if self.sim.crashed() => Ok(None),
            Err(e) => Err(format!("{what} failed without a crash: {e}")),
        }
    }

    fn live_topics(&self) -> Vec<String> {
        let mut out: Vec<String> = TOPICS.iter().map(|(t, _)| t.to_string()).collect();
        for name in EPHEMERAL {
            if self.model.ephemeral.get(name).is_some_and(|e| e.exists) {
                out.push(name.to_owned());
            }
        }
        out
    }

    fn message(&mut self, topic: &str, keyed: bool) -> (Message, Sent) {
        let id = self.id();
        let mut m = Message::new(topic, format!("m{}", self.next)).with_id(id);
        let mut sent = Sent {
            id,
            topic: topic.to_owned(),
            incarnation: self.model.incarnation(topic),
            fate: Fate::InDoubt,
            placed: None,
            due: None,
            key: None,
            group: None,
            op: self.model.op,
            at: Instant::now(),
        };
        if self.rng.chance(25) {
            m = m.with_key(format!("k{}", self.rng.below(5)));
        }
        if keyed && self.rng.chance(25) {
            let key = format!("idem-{}-{}", self.seed, self.next);
            m = m.with_idempotency_key(key.clone());
            sent.key = Some(key);
        }
        if self.rng.chance(20) {
            let due = if self.long_delays && self.rng.chance(40) {
                self.long_due
            } else {
                SystemTime::now() + Duration::from_millis(self.rng.between(2, 15))
            };
            m = m.with_deliver_at(due);
            sent.due = Some(due);
        }
        (m, sent)
    }

    /// Runs one random operation.
    pub async fn step(&mut self) -> Result<Step, String> {
        self.model.op += 1;
        let pick = self.rng.below(100);
        match pick {
            0..=29 => self.publish().await?,
            30..=39 => self.transaction().await?,
            40..=44 => self.prepare_half().await?,
            45..=49 => self.resolve_half().await?,
            50..=64 => self.consume().await?,
            65..=69 => {
                let engine = self.driver.engine().clone();
                let r = blocking(|| engine.save_offsets());
                if self.outcome("save_offsets", r)?.is_some() {
                    self.model.saved_op = self.model.op;
                }
            }
            70..=74 => {
                let engine = self.driver.engine().clone();
                let r = blocking(|| engine.checkpoint());
                if self.outcome("checkpoint", r)?.is_some() {
                    self.model.saved_op = self.model.op;
                    self.model.checkpoint_op = self.model.op;
                }
            }
            75..=78 => {
                let engine = self.driver.engine().clone();
                let r = blocking(|| engine.enforce_retention());
                if self.outcome("retention", r)?.is_some() {
                    self.model.retention_op = self.model.op;
                }
            }
            79..=86 => self.topic_change().await?,
            87..=93 => self.promote().await?,
            _ => {
                if self.interval {
                    tokio::time::sleep(Duration::from_millis(self.rng.between(2, 8))).await;
                }
            }
        }
        Ok(if self.sim.crashed() {
            Step::Crashed
        } else {
            Step::Go
        })
    }

    async fn publish(&mut self) -> Result<(), String> {
        let topics = self.live_topics();
        let topic = topics[self.rng.below(topics.len() as u64) as usize].clone();
        let keyed = TOPICS.iter().any(|(t, _)| *t == topic);
        // Sometimes a repeat of an acknowledged idempotency key.
        let repeat = self
            .model
            .sent
            .iter()
            .enumerate()
            .filter(|(_, s)| s.key.is_some() && s.fate == Fate::Acked)
            .map(|(i, _)| i)
            .collect::<Vec<_>>();
        if keyed && !repeat.is_empty() && self.rng.chance(15) {
            let first =
                self.model.sent[repeat[self.rng.below(repeat.len() as u64) as usize]].clone();
            let id = self.id();
            let m = Message::new(first.topic.as_str(), "again")
                .with_id(id)
                .with_idempotency_key(first.key.clone().unwrap_or_default());
            let r = self.driver.publish(vec![m]).await;
            let mut sent = Sent {
                id,
                key: None,
                fate: Fate::InDoubt,
                ..first.clone()
            };
            if let Some(receipts) = self.outcome("publish (repeated key)", r)? {
                let r = &receipts[0];
                if !r.duplicate || r.id != first.id || r.offset != first.placed.and_then(|p| p.1) {
                    self.early.push(format!(
                        "a repeated idempotency key got {r:?}, not the first send's receipt"
                    ));
                }
                sent.fate = Fate::Gone;
            }
            self.model.sent.push(sent);
            return Ok(());
        }
        let n = self.rng.between(1, 3);
        let (messages, mut sents): (Vec<_>, Vec<_>) =
            (0..n).map(|_| self.message(&topic, keyed)).unzip();
        let r = self.driver.publish(messages).await;
        if let Some(receipts) = self.outcome("publish", r)? {
            for (s, r) in sents.iter_mut().zip(&receipts) {
                s.fate = Fate::Acked;
                s.placed = Some((r.partition, r.offset));
                s.at = Instant::now();
            }
        }
        self.model.sent.extend(sents);
        Ok(())
    }

    async fn transaction(&mut self) -> Result<(), String> {
        let group = self.model.groups;
        self.model.groups += 1;
        let n = self.rng.between(1, 4);
        let mut sents = Vec::new();
        let mut messages = Vec::new();
        for _ in 0..n {
            let topic = TOPICS[self.rng.below(2) as usize].0;
            let (m, mut s) = self.message(topic, false);
            s.group = Some(group);
            messages.push(m);
            sents.push(s);
        }
        let commit = self.rng.chance(70);
        let r = async {
            let mut tx = self.driver.begin().await?;
            let receipts = tx.publish(messages).await?;
            if commit {
                tx.commit().await?;
            } else {
                tx.abort().await?;
            }
            Ok(receipts)
        }
        .await;
        let done = self.outcome("transaction", r)?;
        for s in &mut sents {
            s.fate = match (&done, commit) {
                (Some(_), true) => Fate::Acked,
                (_, false) => Fate::Gone,
                (None, true) => Fate::InDoubt,
            };
            s.at = Instant::now();
        }
        self.model.sent.extend(sents);
        Ok(())
    }

    async fn prepare_half(&mut self) -> Result<(), String> {
        let group = self.model.groups;
        self.model.groups += 1;
        let (m, mut s) = self.message("a", false);
        s.group = Some(group);
        s.fate = Fate::Gone;
        let r = self.driver.publish_half(HALF_GROUP, m).await;
        let index = self.model.sent.len();
        self.model.sent.push(s);
        match self.outcome("publish_half", r)? {
            Some((_, token)) => self.model.halves.push(Half {
                sent: index,
                token,
                resolved: None,
                in_doubt: false,
                prepared: (self.model.op, Instant::now()),
                resolved_at: None,
            }),
            // Its token never came back: it can only stay unresolved.
            None => self.model.halves_lost += 1,
        }
        Ok(())
    }

    async fn resolve_half(&mut self) -> Result<(), String> {
        let open: Vec<usize> = (0..self.model.halves.len())
            .filter(|&i| self.model.halves[i].resolved.is_none())
            .collect();
        if open.is_empty() {
            return Ok(());
        }
        let h = open[self.rng.below(open.len() as u64) as usize];
        let commit = self.rng.chance(60);
        let outcome = if commit {
            HalfOutcome::Commit
        } else {
            HalfOutcome::Rollback
        };
        let token = self.model.halves[h].token.clone();
        let r = self.driver.resolve_half(HALF_GROUP, token, outcome).await;
        let done = self.outcome("resolve_half", r)?.is_some();
        let half = &mut self.model.halves[h];
        half.resolved = Some(commit);
        half.in_doubt = !done;
        half.resolved_at = Some((self.model.op, Instant::now()));
        let s = &mut self.model.sent[half.sent];
        s.op = self.model.op;
        s.at = Instant::now();
        s.fate = match (done, commit) {
            (true, true) => Fate::Acked,
            (false, true) => Fate::InDoubt,
            (_, false) => Fate::Gone,
        };
        Ok(())
    }

    async fn consume(&mut self) -> Result<(), String> {
        let g = self.rng.below(self.subs.len() as u64) as usize;
        let max = self.rng.between(1, 8) as usize;
        let fetched =
            tokio::time::timeout(Duration::from_millis(1), self.subs[g].1.fetch(max)).await;
        let deliveries = match fetched {
            Err(_) => return Ok(()),
            Ok(r) => match self.outcome("fetch", r)? {
                Some(d) => d,
                None => return Ok(()),
            },
        };
        let now = SystemTime::now();
        let mut tokens = Vec::new();
        let mut acks = Vec::new();
        for d in deliveries {
            let due = self
                .model
                .sent
                .iter()
                .find(|s| Some(s.id) == d.message.id())
                .and_then(|s| s.due);
            if due.is_some_and(|due| now < due) {
                self.early
                    .push(format!("delayed {:?} delivered early", d.message.id()));
            }
            if self.rng.chance(70) {
                acks.push(Ack {
                    group: self.subs[g].0.clone(),
                    topic: d.token.topic.to_string(),
                    partition: d.partition,
                    offset: d.token.offset,
                    id: d.message.id().unwrap_or_default(),
                    op: self.model.op,
                });
                tokens.push(d.token);
            }
        }
        if !tokens.is_empty() {
            let r = self.subs[g].1.ack(tokens).await;
            if self.outcome("ack", r)?.is_some() {
                self.model.acks.extend(acks);
            }
        }
        Ok(())
    }

    async fn topic_change(&mut self) -> Result<(), String> {
        let name = EPHEMERAL[self.rng.below(EPHEMERAL.len() as u64) as usize];
        let e = self
            .model
            .ephemeral
            .entry(name.to_owned())
            .or_default()
            .clone();
        if e.exists {
            let r = self.driver.delete_topic(name).await;
            let done = self.outcome("delete_topic", r)?.is_some();
            let e = self.model.ephemeral.get_mut(name).expect("known");
            e.in_doubt = !done;
            e.exists = !done;
        } else {
            let partitions = self.rng.between(1, 2) as u32;
            let r = self
                .driver
                .ensure_topic(name, &TopicSpec::new(partitions))
                .await;
            let done = self.outcome("ensure_topic", r)?.is_some();
            let e = self.model.ephemeral.get_mut(name).expect("known");
            *e = Ephemeral {
                incarnation: e.incarnation + 1,
                exists: done,
                in_doubt: !done,
            };
        }
        Ok(())
    }

    /// Waits until the short delays sent so far are due, then promotes
    /// them (long ones are due after the workload, so which delays a
    /// promotion takes does not depend on timing).
    async fn promote(&mut self) -> Result<(), String> {
        let last = self
            .model
            .sent
            .iter()
            .filter_map(|s| s.due)
            .filter(|d| *d != self.long_due)
            .max();
        if let Some(wait) = last.and_then(|d| d.duration_since(SystemTime::now()).ok()) {
            tokio::time::sleep(wait).await;
        }
        let engine = self.driver.engine().clone();
        let r = blocking(|| engine.promote_due_now());
        self.outcome("promote", r)?;
        Ok(())
    }
}

/// Opens `fs` for the workload and sets the seed's topics and groups up.
pub async fn setup(
    seed: u64,
    sim: SimFs,
    options: mq_native::Options,
    rng: Rng,
    interval: bool,
) -> Result<World, String> {
    let driver = NativeDriver::open_on(options, Arc::new(sim.clone()), false)
        .await
        .map_err(|e| format!("first open failed: {e}"))?;
    let mut world = World {
        seed,
        sim,
        driver,
        rng,
        model: Model::default(),
        subs: Vec::new(),
        next: 0,
        long_due: SystemTime::now() + Duration::from_millis(700),
        long_delays: false,
        interval,
        early: Vec::new(),
    };
    world.long_delays = world.rng.chance(30);
    for (topic, partitions) in TOPICS {
        let mut spec = TopicSpec::new(partitions);
        if topic == "b" && world.rng.chance(25) {
            spec = spec.with_retention(Duration::from_millis(world.rng.between(5, 40)));
        }
        world
            .driver
            .ensure_topic(topic, &spec)
            .await
            .map_err(|e| format!("setup: {e}"))?;
    }
    for group in GROUPS {
        let spec = SubscribeSpec::new(TOPICS.iter().map(|t| t.0.to_owned()).collect(), group)
            .with_start(StartFrom::Earliest)
            .with_prefetch(64);
        let sub = world
            .driver
            .subscribe(spec)
            .await
            .map_err(|e| format!("setup: {e}"))?;
        world.subs.push((group.to_owned(), sub));
    }
    Ok(world)
}
