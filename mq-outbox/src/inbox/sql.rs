//! The inbox SQL, one text for SQLite and PostgreSQL (both take `$n`
//! parameters, `ON CONFLICT ... DO UPDATE ... WHERE` and `RETURNING`), and
//! the macro that implements [`InboxDatabase`](super::InboxDatabase) with it
//! for each database.
//!
//! Table `mq_inbox`: one row per `(scope, dedup_key)`, `state` 0 while a
//! [`DedupStore`](mq_core::idempotency::DedupStore) claim is held and 1 once
//! handled, `until_ms` when the row stops counting (lease or window end).

/// Claims a key unless a live row holds it; returns a row when claimed.
pub(crate) const CLAIM: &str =
    "INSERT INTO mq_inbox (scope, dedup_key, state, until_ms) VALUES ($1, $2, 0, $3) \
     ON CONFLICT (scope, dedup_key) DO UPDATE SET state = 0, until_ms = excluded.until_ms \
     WHERE mq_inbox.until_ms <= $4 RETURNING state";

/// The state of a live row.
pub(crate) const STATE: &str =
    "SELECT state FROM mq_inbox WHERE scope = $1 AND dedup_key = $2 AND until_ms > $3";

/// Marks a key handled until the window ends.
pub(crate) const COMPLETE: &str =
    "INSERT INTO mq_inbox (scope, dedup_key, state, until_ms) VALUES ($1, $2, 1, $3) \
     ON CONFLICT (scope, dedup_key) DO UPDATE SET state = 1, until_ms = excluded.until_ms";

/// Drops a claim (never a handled row).
pub(crate) const RELEASE: &str =
    "DELETE FROM mq_inbox WHERE scope = $1 AND dedup_key = $2 AND state = 0";

/// Records a key as handled inside the handler's transaction, unless a
/// live row has it; returns a row when recorded. On PostgreSQL a
/// concurrent copy's insert waits on the unique index until the first
/// transaction ends, then sees its row: the second copy is skipped, never
/// run alongside. SQLite has one writer at a time.
pub(crate) const RECORD: &str =
    "INSERT INTO mq_inbox (scope, dedup_key, state, until_ms) VALUES ($1, $2, 1, $3) \
     ON CONFLICT (scope, dedup_key) DO UPDATE SET state = 1, until_ms = excluded.until_ms \
     WHERE mq_inbox.until_ms <= $4 RETURNING state";

/// Deletes rows whose window or lease ended.
pub(crate) const CLEANUP: &str = "DELETE FROM mq_inbox WHERE until_ms <= $1";

/// Implements `InboxDatabase` for `$db` with the SQL above.
macro_rules! impl_inbox_database {
    ($db:ty, $migrate:path) => {
        impl $crate::inbox::sealed::Sealed for $db {}

        #[async_trait::async_trait]
        impl $crate::inbox::InboxDatabase for $db {
            async fn migrate(pool: &sqlx::Pool<Self>) -> mq_core::Result<()> {
                $migrate(pool).await
            }

            async fn record(
                tx: &mut sqlx::Transaction<'static, Self>,
                scope: &str,
                key: &str,
                until_ms: i64,
                now_ms: i64,
            ) -> mq_core::Result<bool> {
                let row = sqlx::query($crate::inbox::sql::RECORD)
                    .bind(scope)
                    .bind(key)
                    .bind(until_ms)
                    .bind(now_ms)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err($crate::error::db("recording a handled message"))?;
                Ok(row.is_some())
            }

            async fn claim(
                pool: &sqlx::Pool<Self>,
                scope: &str,
                key: &str,
                until_ms: i64,
                now_ms: i64,
            ) -> mq_core::Result<mq_core::idempotency::Claim> {
                use mq_core::idempotency::Claim;
                let claimed = sqlx::query($crate::inbox::sql::CLAIM)
                    .bind(scope)
                    .bind(key)
                    .bind(until_ms)
                    .bind(now_ms)
                    .fetch_optional(pool)
                    .await
                    .map_err($crate::error::db("claiming a dedup key"))?;
                if claimed.is_some() {
                    return Ok(Claim::Claimed);
                }
                let state: Option<i32> = sqlx::query_scalar($crate::inbox::sql::STATE)
                    .bind(scope)
                    .bind(key)
                    .bind(now_ms)
                    .fetch_optional(pool)
                    .await
                    .map_err($crate::error::db("reading a dedup key"))?;
                // A row that ended between the two statements: let the
                // caller come back rather than claim twice.
                Ok(match state {
                    Some(1) => Claim::Done,
                    _ => Claim::InProgress,
                })
            }

            async fn complete(
                pool: &sqlx::Pool<Self>,
                scope: &str,
                key: &str,
                until_ms: i64,
            ) -> mq_core::Result<()> {
                sqlx::query($crate::inbox::sql::COMPLETE)
                    .bind(scope)
                    .bind(key)
                    .bind(until_ms)
                    .execute(pool)
                    .await
                    .map_err($crate::error::db("completing a dedup key"))?;
                Ok(())
            }

            async fn release(
                pool: &sqlx::Pool<Self>,
                scope: &str,
                key: &str,
            ) -> mq_core::Result<()> {
                sqlx::query($crate::inbox::sql::RELEASE)
                    .bind(scope)
                    .bind(key)
                    .execute(pool)
                    .await
                    .map_err($crate::error::db("releasing a dedup claim"))?;
                Ok(())
            }

            async fn cleanup(pool: &sqlx::Pool<Self>, now_ms: i64) -> mq_core::Result<u64> {
                let done = sqlx::query($crate::inbox::sql::CLEANUP)
                    .bind(now_ms)
                    .execute(pool)
                    .await
                    .map_err($crate::error::db("cleaning up the inbox"))?;
                Ok(done.rows_affected())
            }
        }
    };
}

pub(crate) use impl_inbox_database;
