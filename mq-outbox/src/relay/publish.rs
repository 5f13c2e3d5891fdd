//! Publishing claimed rows, in id order, each run of rows that share a
//! trace context in one batch sent inside that context.

use mq_core::{Error, Message, Producer};

use super::store::Outcome;
use crate::record::Pending;

/// Publishes `rows` in order. Stops at the first retryable failure and
/// returns it with what was published before it: the rest stays pending
/// and goes out, in order, on a later attempt. A message the backend
/// refuses for good is marked failed and skipped, so one bad row cannot
/// stall its key forever.
pub(crate) async fn publish(producer: &Producer, rows: &[Pending]) -> (Outcome, Option<Error>) {
    let mut outcome = Outcome::default();
    let mut start = 0;
    while start < rows.len() {
        let context = trace_of(&rows[start]);
        let len = rows[start..]
            .iter()
            .take_while(|row| trace_of(row) == context)
            .count();
        let run = &rows[start..start + len];
        start += len;
        if let Err(error) = send_run(producer, run, &mut outcome).await {
            return (outcome, Some(error));
        }
    }
    (outcome, None)
}

fn trace_of(row: &Pending) -> (Option<&str>, Option<&str>) {
    (
        row.stored.traceparent.as_deref(),
        row.stored.tracestate.as_deref(),
    )
}

/// The messages of `rows`; rows that no longer decode are marked failed.
fn messages(rows: &[Pending], outcome: &mut Outcome) -> (Vec<i64>, Vec<Message>) {
    let mut ids = Vec::with_capacity(rows.len());
    let mut messages = Vec::with_capacity(rows.len());
    for row in rows {
        match row.stored.to_message() {
            Ok(message) => {
                ids.push(row.id);
                messages.push(message);
            }
            Err(error) => refused(row.id, &error, outcome),
        }
    }
    (ids, messages)
}

fn refused(id: i64, error: &Error, outcome: &mut Outcome) {
    tracing::error!(row = id, %error, "outbox row refused; marked failed, never retried");
    outcome.failed.push((id, error.to_string()));
}

/// Sends one run (rows sharing a trace context) as a batch; if the backend
/// refuses the batch for good, sends it message by message to find the
/// ones it refuses.
async fn send_run(
    producer: &Producer,
    run: &[Pending],
    outcome: &mut Outcome,
) -> Result<(), Error> {
    let (traceparent, tracestate) = trace_of(&run[0]);
    let (ids, batch) = messages(run, outcome);
    if batch.is_empty() {
        return Ok(());
    }
    let error =
        match crate::trace::within(traceparent, tracestate, producer.send_batch(batch)).await {
            Ok(_) => {
                outcome.sent.extend(ids);
                return Ok(());
            }
            Err(error) if error.is_retryable() => return Err(error),
            Err(error) => error,
        };
    if ids.len() == 1 {
        refused(ids[0], &error, outcome);
        return Ok(());
    }
    let (ids, batch) = messages(run, &mut Outcome::default());
    for (id, message) in ids.into_iter().zip(batch) {
        match crate::trace::within(traceparent, tracestate, producer.send(message)).await {
            Ok(_) => outcome.sent.push(id),
            Err(error) if error.is_retryable() => return Err(error),
            Err(error) => refused(id, &error, outcome),
        }
    }
    Ok(())
}
