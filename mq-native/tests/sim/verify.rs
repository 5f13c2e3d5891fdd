//! After the power loss: reopen what survived and check it against what
//! was acknowledged.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use mq_core::driver::{Driver, DriverSubscription, HalfOutcome, StartFrom, SubscribeSpec};
use mq_core::{Message, MessageId};
use mq_native::NativeDriver;

use super::model::{Fate, Model, Sent};
use super::workload::{GROUPS, HALF_GROUP, TOPICS};

/// What the durability mode promises for acknowledged sends.
pub struct Promise {
    /// `fsync=interval:<ms>`: sends acked this long before the power went
    /// (the interval, plus slack for the flusher thread to be scheduled)
    /// or before a checkpoint are durable; the rest may be lost, as a
    /// suffix of each partition.
    pub interval: Option<Duration>,
    pub crashed_at: Instant,
}

impl Promise {
    fn owed(&self, model: &Model, s: &Sent) -> bool {
        self.owed_at(model, s.op, s.at)
    }

    fn owed_at(&self, model: &Model, op: u64, at: Instant) -> bool {
        match self.interval {
            None => true,
            Some(every) => {
                op < model.checkpoint_op
                    || at + every + Duration::from_millis(150) < self.crashed_at
            }
        }
    }
}

/// A record read back: where it is.
type Place = (String, u32, u64);

async fn drain(
    sub: &dyn DriverSubscription,
    until: SystemTime,
    due: &HashMap<MessageId, SystemTime>,
    problems: &mut Vec<String>,
) -> Result<Vec<(Place, MessageId)>, String> {
    let mut out = Vec::new();
    let mut idle = 0;
    while idle < 3 || SystemTime::now() < until {
        let got = tokio::time::timeout(Duration::from_millis(40), sub.fetch(256)).await;
        let deliveries = match got {
            Err(_) => {
                idle += 1;
                continue;
            }
            Ok(r) => r.map_err(|e| format!("fetch after reopen: {e}"))?,
        };
        idle = 0;
        let now = SystemTime::now();
        let mut tokens = Vec::new();
        for d in deliveries {
            let id = d.message.id().unwrap_or_default();
            if due.get(&id).is_some_and(|due| now < *due) {
                problems.push(format!("delayed {id} delivered before it was due"));
            }
            let offset = d.token.offset;
            out.push(((d.token.topic.to_string(), d.partition, offset), id));
            tokens.push(d.token);
        }
        sub.ack(tokens)
            .await
            .map_err(|e| format!("ack after reopen: {e}"))?;
    }
    Ok(out)
}

async fn join(
    driver: &NativeDriver,
    topics: Vec<String>,
    group: &str,
) -> Result<Box<dyn DriverSubscription>, String> {
    let spec = SubscribeSpec::new(topics, group)
        .with_start(StartFrom::Earliest)
        .with_prefetch(10_000);
    driver
        .subscribe(spec)
        .await
        .map_err(|e| format!("subscribe after reopen: {e}"))
}

/// Checks the reopened `driver` against `model`; returns the violations.
pub async fn check(
    driver: &NativeDriver,
    model: &mut Model,
    promise: &Promise,
) -> Result<Vec<String>, String> {
    let mut problems = Vec::new();
    let engine = driver.engine().clone();

    // Topics: acknowledged changes stand.
    for (name, e) in &model.ephemeral {
        if e.in_doubt {
            continue;
        }
        if engine.topic(name).is_some() != e.exists {
            problems.push(format!(
                "topic {name}: exists={} after an acknowledged change",
                !e.exists
            ));
        }
    }

    // Half messages: the unresolved ones are still pending; commit them.
    let owed: Vec<bool> = model
        .halves
        .iter()
        .map(|h| promise.owed_at(model, h.prepared.0, h.prepared.1))
        .collect();
    let unresolved = model
        .halves
        .iter()
        .zip(&owed)
        .filter(|(h, o)| h.resolved.is_none() && **o)
        .count();
    // Under `interval` a resolution not yet durable may be undone too.
    let undone: Vec<bool> = model
        .halves
        .iter()
        .map(|h| {
            h.resolved_at
                .is_some_and(|(op, at)| !promise.owed_at(model, op, at))
        })
        .collect();
    let doubtful = (0..model.halves.len())
        .filter(|&i| model.halves[i].in_doubt || !owed[i] || undone[i])
        .count()
        + model.halves_lost;
    let pending = engine.half_pending();
    if pending < unresolved || pending > unresolved + doubtful {
        problems.push(format!(
            "{pending} half messages pending, {unresolved} owed (+{doubtful} in doubt)"
        ));
    }
    for ((h, owed), undone) in model.halves.clone().into_iter().zip(owed).zip(undone) {
        if h.resolved.is_some() && !h.in_doubt && !undone {
            continue;
        }
        let r = driver
            .resolve_half(HALF_GROUP, h.token.clone(), HalfOutcome::Commit)
            .await;
        if let Err(e) = r {
            if owed {
                problems.push(format!("committing half {} after reopen: {e}", h.sent));
            }
            // A prepare the mode did not promise is gone: so is its message.
            model.sent[h.sent].fate = Fate::Gone;
            continue;
        }
        let s = &mut model.sent[h.sent];
        // Committed now, or by the interrupted commit; an interrupted
        // rollback may have stood.
        s.fate = if h.resolved != Some(false) {
            Fate::Acked
        } else {
            Fate::InDoubt
        };
    }

    // Probes: new records every group must get (a stale ack saved above
    // the log's end would hide them).
    let mut probes = Vec::new();
    for (topic, partitions) in TOPICS {
        for p in 0..partitions {
            let id = MessageId::from_uuid(uuid::Uuid::from_u128(u128::MAX - probes.len() as u128));
            let m = Message::new(topic, "probe")
                .with_id(id)
                .with_key(probe_key(p, partitions));
            let r = driver
                .publish(vec![m])
                .await
                .map_err(|e| format!("probe publish: {e}"))?;
            probes.push((id, topic.to_owned(), r[0].partition, r[0].offset));
        }
    }

    // Everything there, read by a new group once every delay is due.
    let due: HashMap<MessageId, SystemTime> = model
        .sent
        .iter()
        .filter_map(|s| s.due.map(|d| (s.id, d)))
        .collect();
    let until = due
        .values()
        .max()
        .copied()
        .unwrap_or(SystemTime::UNIX_EPOCH)
        + Duration::from_millis(150);
    let mut topics: Vec<String> = TOPICS.iter().map(|t| t.0.to_owned()).collect();
    topics.extend(
        model
            .ephemeral
            .iter()
            .filter(|(n, _)| engine.topic(n).is_some())
            .map(|(n, _)| n.clone()),
    );
    let verify = join(driver, topics, "verify").await?;
    let listing = drain(&*verify, until, &due, &mut problems).await?;
    verify.close().await.map_err(|e| e.to_string())?;

    let mut at: HashMap<MessageId, Vec<Place>> = HashMap::new();
    for (place, id) in &listing {
        at.entry(*id).or_default().push(place.clone());
    }
    let known: HashSet<MessageId> = model
        .sent
        .iter()
        .map(|s| s.id)
        .chain(probes.iter().map(|p| p.0))
        .collect();
    for (id, places) in &at {
        let distinct: HashSet<&Place> = places.iter().collect();
        if distinct.len() > 1 {
            problems.push(format!(
                "{id} is in the log {} times: {distinct:?}",
                distinct.len()
            ));
        }
        if !known.contains(id) {
            problems.push(format!("{id} at {places:?} was never sent"));
        }
    }
    // The lowest offset still there per partition: acknowledged records
    // below it may be gone to retention, none above it.
    let mut low: HashMap<(String, u32), u64> = HashMap::new();
    for ((t, p, o), _) in &listing {
        let e = low.entry((t.clone(), *p)).or_insert(*o);
        *e = (*e).min(*o);
    }
    let mut groups: HashMap<usize, (usize, usize, bool)> = HashMap::new();
    for s in &model.sent {
        let places = at.get(&s.id).map_or(0, |p| p.len().min(1));
        let live = model.is_live(&s.topic, s.incarnation)
            && !model.ephemeral.get(&s.topic).is_some_and(|e| e.in_doubt);
        if !live {
            if places > 0 && !model.ephemeral.get(&s.topic).is_some_and(|e| e.in_doubt) {
                problems.push(format!("{} of a deleted topic {} is back", s.id, s.topic));
            }
            continue;
        }
        if let Some(g) = s.group {
            let e = groups.entry(g).or_insert((0, 0, s.fate == Fate::InDoubt));
            e.0 += 1;
            e.1 += places;
        }
        let retained = s.op >= model.retention_op;
        match s.fate {
            Fate::Gone if places > 0 => problems.push(format!(
                "{} ({:?}) is visible but was never committed",
                s.id, s.group
            )),
            Fate::Acked if places == 0 => {
                let below_start = match s.placed {
                    Some((p, Some(o))) => low.get(&(s.topic.clone(), p)).is_none_or(|l| o < *l),
                    _ => true,
                };
                if promise.owed(model, s) && (retained || !below_start) {
                    problems.push(format!(
                        "acknowledged {} to {} {:?} is lost",
                        s.id, s.topic, s.placed
                    ));
                }
            }
            _ => {}
        }
        if let (Some((p, Some(o))), Some(places)) = (s.placed, at.get(&s.id)) {
            if places.iter().any(|pl| *pl != (s.topic.clone(), p, o)) {
                problems.push(format!(
                    "{} acknowledged at {} {p}/{o} is at {places:?}",
                    s.id, s.topic
                ));
            }
        }
    }
    for (g, (n, seen, doubt)) in groups {
        if seen != 0 && seen != n {
            problems.push(format!(
                "transaction {g} (in doubt: {doubt}) is partly visible: {seen} of {n}"
            ));
        }
    }
    for (id, topic, p, o) in &probes {
        if at
            .get(id)
            .is_none_or(|pl| pl[0] != (topic.clone(), *p, o.unwrap_or(u64::MAX)))
        {
            problems.push(format!(
                "probe {id} to {topic} {p}/{o:?} is not where its receipt says"
            ));
        }
    }

    // Groups: confirmed acks are never redelivered, nothing unacked skipped.
    let by_place: HashMap<Place, MessageId> = listing.iter().cloned().collect();
    let sent_op: HashMap<MessageId, u64> = model.sent.iter().map(|s| (s.id, s.op)).collect();
    let by_id: HashMap<MessageId, &Sent> = model.sent.iter().map(|s| (s.id, s)).collect();
    for group in GROUPS {
        let sub = join(
            driver,
            TOPICS.iter().map(|t| t.0.to_owned()).collect(),
            group,
        )
        .await?;
        let got: HashMap<Place, MessageId> = drain(&*sub, SystemTime::now(), &due, &mut problems)
            .await?
            .into_iter()
            .collect();
        sub.close().await.map_err(|e| e.to_string())?;
        let mut acked: HashSet<Place> = HashSet::new();
        for a in model.acks.iter().filter(|a| a.group == group) {
            let place = (a.topic.clone(), a.partition, a.offset);
            // By id: under `interval` a lost record's offset is reused.
            // There an ack is owed only if the record it acked was: a
            // promoted delay whose promotion was lost is promoted (and
            // delivered) again.
            let record_owed = promise.interval.is_none()
                || a.op < model.checkpoint_op
                || by_id
                    .get(&a.id)
                    .is_some_and(|s| s.due.is_none() && promise.owed(model, s));
            if a.op < model.saved_op && record_owed && got.get(&place) == Some(&a.id) {
                problems.push(format!("{group} acked {place:?} (saved) and got it again"));
            }
            acked.insert(place);
        }
        for (place, id) in &by_place {
            if !TOPICS.iter().any(|t| t.0 == place.0)
                || acked.contains(place)
                || got.contains_key(place)
            {
                continue;
            }
            let expirable = sent_op.get(id).is_some_and(|op| *op < model.retention_op);
            if !expirable {
                problems.push(format!(
                    "{group} never got {place:?} ({id}), which it never acked"
                ));
            }
        }
    }

    // Idempotency keys: an acknowledged one is still remembered.
    for s in model.sent.clone() {
        let Some(key) = &s.key else { continue };
        if s.fate != Fate::Acked
            || !promise.owed(model, &s)
            || !at.contains_key(&s.id) && s.op < model.retention_op
        {
            continue;
        }
        let m = Message::new(s.topic.as_str(), "late")
            .with_id(MessageId::new())
            .with_idempotency_key(key.clone());
        let r = driver
            .publish(vec![m])
            .await
            .map_err(|e| format!("publish after reopen: {e}"))?;
        if !r[0].duplicate || r[0].id != s.id {
            problems.push(format!(
                "idempotency key {key} of {} was forgotten: {:?}",
                s.id, r[0]
            ));
        }
    }
    Ok(problems)
}

/// A routing key that lands on partition `p` of `partitions`.
fn probe_key(p: u32, partitions: u32) -> String {
    (0..10_000)
        .map(|i| format!("probe-{i}"))
        .find(|k| mq_core::driver::partition_for_key(k, partitions) == p)
        .unwrap_or_default()
}
