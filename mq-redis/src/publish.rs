//! Writing messages: plain ones by pipelined `XADD`, delayed ones into the
//! topic's schedule, ones with an idempotency key by one script that
//! writes and remembers the key atomically.
//!
//! A send whose reply was lost (the connection broke) has an unknown
//! outcome. Before it is sent again, the streams are searched for the ids
//! of its plain messages, and those found are not written twice; the
//! scripted writes are safe to repeat by themselves (the idempotency key,
//! or the schedule's set semantics), so a retry never makes a duplicate
//! visible to consumers.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mq_core::driver::clock::{due_millis, epoch_millis};
use mq_core::driver::partition_for_key;
use mq_core::{Message, MessageId, Receipt, Result};
use redis::{Pipeline, Value};

use crate::codec::{array_of, bytes_of, fields_size, int_of, text_of, write_fields};
use crate::connection::{Inner, Retries};
use crate::error::{map, unexpected};
use crate::topics::TopicInfo;

/// How far back (by entry time) a retried send looks for its own messages.
const RECOVERY_LOOKBACK: Duration = Duration::from_secs(60);
/// Most entries of one stream a recovery scans.
const RECOVERY_SCAN: usize = 200_000;

/// A message ready to be written.
pub(crate) struct Planned {
    pub(crate) id: MessageId,
    pub(crate) topic: Arc<TopicInfo>,
    pub(crate) partition: u32,
    /// Encoded only when written, straight into the command.
    pub(crate) message: Message,
    /// Due time in ms, for a message delayed to the future.
    pub(crate) due: Option<u64>,
    /// The idempotency key's Redis key.
    pub(crate) once_key: Option<String>,
}

impl Planned {
    fn is_plain(&self) -> bool {
        self.due.is_none() && self.once_key.is_none()
    }

    fn stream(&self) -> &str {
        &self.topic.streams[self.partition as usize]
    }

    /// The entry fields, as script arguments after `args`.
    fn script_args(&self, mut args: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        write_fields(&mut args, &self.message, self.id);
        args
    }
}

impl Inner {
    /// Resolves topics and partitions and encodes each message.
    pub(crate) async fn plan(&self, batch: Vec<Message>) -> Result<Vec<Planned>> {
        let now = SystemTime::now();
        let mut planned = Vec::with_capacity(batch.len());
        let mut last: Option<Arc<TopicInfo>> = None;
        for message in batch {
            let topic = match &last {
                Some(t) if *t.name == *message.topic() => t.clone(),
                _ => {
                    let t = self.topic(message.topic(), None).await?;
                    last = Some(t.clone());
                    t
                }
            };
            let partition = match message.key() {
                Some(key) => partition_for_key(key, topic.partitions),
                None => self.round_robin.fetch_add(1, Ordering::Relaxed) % topic.partitions,
            };
            let id = message.id().unwrap_or_default();
            let due = message.deliver_at().filter(|at| *at > now).map(due_millis);
            let once_key = message
                .idempotency_key()
                .map(|k| self.keys.idempotency(&topic.name, k));
            planned.push(Planned {
                id,
                message,
                topic,
                partition,
                due,
                once_key,
            });
        }
        Ok(planned)
    }

    /// The command writing one planned message. `eval` sends the script
    /// source (inside `MULTI`, where a `NOSCRIPT` could not be retried).
    pub(crate) fn write_command(&self, p: &Planned, now: SystemTime, eval: bool) -> redis::Cmd {
        let trim = p.topic.trim.args(now);
        if p.is_plain() {
            // The hot path: one XADD built in place, its buffers sized once.
            let (fields, bytes) = fields_size(&p.message);
            let stream = p.stream();
            let mut cmd = redis::Cmd::with_capacity(8 + fields, 32 + stream.len() + bytes);
            cmd.arg("XADD").arg(stream);
            if let Some((strategy, threshold)) = trim {
                cmd.arg(strategy).arg("~").arg(threshold);
            }
            cmd.arg("*");
            write_fields(&mut cmd, &p.message, p.id);
            return cmd;
        }
        let delay_key = self.keys.delayed(&p.topic.name);
        let index = self.keys.delay_index();
        if let Some(once_key) = &p.once_key {
            let args = p.script_args(vec![
                self.options
                    .dedup_window
                    .as_millis()
                    .to_string()
                    .into_bytes(),
                format!("{}|{}", p.id, p.partition).into_bytes(),
                p.due
                    .map(|d| d.to_string())
                    .unwrap_or_default()
                    .into_bytes(),
                p.topic.name.as_bytes().to_vec(),
                p.partition.to_string().into_bytes(),
                trim.as_ref().map_or("", |t| t.0).as_bytes().to_vec(),
                trim.map(|t| t.1).unwrap_or_default().into_bytes(),
            ]);
            let keys = [
                once_key.as_str(),
                p.stream(),
                delay_key.as_str(),
                index.as_str(),
            ];
            let lua = &self.scripts.publish_once;
            return if eval {
                lua.eval(&keys, args)
            } else {
                lua.evalsha(&keys, args)
            };
        }
        // Left: a delayed message without an idempotency key.
        let due = p.due.unwrap_or_default();
        let args = p.script_args(vec![
            due.to_string().into_bytes(),
            p.topic.name.as_bytes().to_vec(),
            p.partition.to_string().into_bytes(),
        ]);
        let keys = [delay_key.as_str(), index.as_str()];
        let lua = &self.scripts.schedule;
        if eval {
            lua.eval(&keys, args)
        } else {
            lua.evalsha(&keys, args)
        }
    }

    /// Writes a batch and returns a receipt per message, in order.
    pub(crate) async fn publish(&self, batch: Vec<Message>) -> Result<Vec<Receipt>> {
        let planned = self.plan(batch).await?;
        if planned.iter().any(|p| p.due.is_some()) {
            self.start_promoter();
        }
        let sent_at = SystemTime::now();
        let mut retries = Retries::new(&self.options);
        let mut receipts: Vec<Option<Receipt>> = vec![None; planned.len()];
        let mut todo: Vec<usize> = (0..planned.len()).collect();
        let mut uncertain = false;
        loop {
            if uncertain {
                self.recover(&planned, &mut todo, &mut receipts, sent_at)
                    .await?;
            }
            if todo.is_empty() {
                break;
            }
            let now = SystemTime::now();
            let mut pipe = Pipeline::with_capacity(todo.len());
            for &i in &todo {
                pipe.add_command(self.write_command(&planned[i], now, false));
            }
            let e = match pipe.query_async::<Vec<Value>>(&mut self.conn()).await {
                Ok(replies) => {
                    if replies.len() != todo.len() {
                        return Err(unexpected("a publish pipeline"));
                    }
                    for (&i, reply) in todo.iter().zip(replies) {
                        receipts[i] = Some(receipt(&planned[i], reply)?);
                    }
                    break;
                }
                Err(e) => e,
            };
            let Some(pause) = retries.pause(&e) else {
                return Err(map(e, "publish"));
            };
            tracing::debug!(error = %e, ?pause, "publish failed; checking what was written, then retrying");
            self.before_retry(&e).await;
            tokio::time::sleep(pause).await;
            uncertain = true;
        }
        receipts
            .into_iter()
            .map(|r| r.ok_or_else(|| unexpected("a publish pipeline")))
            .collect()
    }

    /// Finds which plain messages of `todo` a stream already holds, gives
    /// them receipts and removes them from `todo`.
    pub(crate) async fn recover(
        &self,
        planned: &[Planned],
        todo: &mut Vec<usize>,
        receipts: &mut [Option<Receipt>],
        sent_at: SystemTime,
    ) -> Result<()> {
        let mut by_stream: HashMap<&str, Vec<usize>> = HashMap::new();
        for &i in todo.iter() {
            if planned[i].is_plain() {
                by_stream.entry(planned[i].stream()).or_default().push(i);
            }
        }
        let oldest = epoch_millis(sent_at.checked_sub(RECOVERY_LOOKBACK).unwrap_or(sent_at));
        let mut found_any = Vec::new();
        for (stream, indexes) in by_stream {
            let ids: Vec<String> = indexes.iter().map(|&i| planned[i].id.to_string()).collect();
            let found: Value = self
                .retrying("publish (recovery)", |mut c| {
                    let mut inv = self.scripts.find_ids.script.key(stream);
                    inv.arg(oldest).arg(RECOVERY_SCAN).arg(&ids);
                    async move { inv.invoke_async(&mut c).await }
                })
                .await?;
            let found = array_of(&found).ok_or_else(|| unexpected("publish recovery"))?;
            let entries: HashMap<String, String> = found
                .chunks_exact(2)
                .filter_map(|p| Some((text_of(&p[0])?, text_of(&p[1])?)))
                .collect();
            for &i in &indexes {
                if let Some(entry) = entries.get(&planned[i].id.to_string()) {
                    let p = &planned[i];
                    let mut r = Receipt::new(p.id, p.topic.name.clone(), p.partition, None);
                    r.broker_id = Some(entry.clone());
                    receipts[i] = Some(r);
                    found_any.push(i);
                }
            }
        }
        if !found_any.is_empty() {
            tracing::debug!(
                count = found_any.len(),
                "messages of an interrupted send were already written"
            );
            todo.retain(|i| !found_any.contains(i));
        }
        Ok(())
    }
}

/// The receipt of one write from its reply.
fn receipt(p: &Planned, reply: Value) -> Result<Receipt> {
    if p.once_key.is_some() {
        return once_receipt(p, &reply);
    }
    let mut r = Receipt::new(p.id, p.topic.name.clone(), p.partition, None);
    if p.due.is_none() {
        // The entry id's bytes become the receipt's string as they are.
        let entry = match reply {
            Value::BulkString(b) => String::from_utf8(b).ok(),
            other => text_of(&other),
        };
        r.broker_id = Some(entry.ok_or_else(|| unexpected("XADD"))?);
    }
    Ok(r)
}

/// The receipt of an idempotent write: `{duplicate, "<id>|<partition>|<entry>"}`.
fn once_receipt(p: &Planned, reply: &Value) -> Result<Receipt> {
    let items = array_of(reply).ok_or_else(|| unexpected("an idempotent publish"))?;
    let (Some(dup), Some(text)) = (
        items.first().and_then(int_of),
        items.get(1).and_then(bytes_of),
    ) else {
        return Err(unexpected("an idempotent publish"));
    };
    let text = String::from_utf8_lossy(text);
    let mut parts = text.splitn(3, '|');
    let (Some(id), Some(partition), Some(entry)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(unexpected("an idempotent publish (receipt)"));
    };
    let id = MessageId::parse(id).map_err(|_| unexpected("an idempotent publish (receipt id)"))?;
    let partition = partition
        .parse()
        .map_err(|_| unexpected("an idempotent publish (receipt partition)"))?;
    let mut r = Receipt::new(id, p.topic.name.clone(), partition, None);
    r.broker_id = (!entry.is_empty()).then(|| entry.to_owned());
    // A retried send of this very message finds its own first write: that
    // is not a duplicate from the caller's point of view.
    r.duplicate = dup == 1 && id != p.id;
    Ok(r)
}
