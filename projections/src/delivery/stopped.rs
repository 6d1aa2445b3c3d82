//! Partitions stopped on purpose: a topic that no longer holds what was
//! applied from a partition stops that partition loudly (an error line, a
//! gauge, a row `orders projections status` shows) until an operator's
//! rebuild or a new topic sets things right; it is never passed over.

use std::time::Duration;

use sqlx::PgConnection;

use super::NAME;
use crate::error::Result;

/// How often a stopped partition looks again (an operator's rebuild or a
/// new topic may have set things right).
pub(super) const PARTITION_RECHECK: Duration = Duration::from_secs(5);

/// Stops consuming a partition whose topic no longer holds what was applied
/// from it: loudly (an error line, a gauge, a row `status` shows), never by
/// passing over what came before.
pub(super) async fn stop_partition(
    conn: &mut PgConnection,
    topic: &str,
    partition: i32,
    reason: &str,
) -> Result<()> {
    let new: bool = sqlx::query_scalar!(
        r#"INSERT INTO delivery.stopped_partitions (topic, partition, reason) VALUES ($1, $2, $3)
         ON CONFLICT (topic, partition) DO UPDATE SET reason = EXCLUDED.reason
         RETURNING (xmax = 0) AS "new!""#,
        topic,
        partition,
        reason,
    )
    .fetch_one(conn)
    .await?;
    metrics::gauge!("delivery_partition_stopped", "partition" => partition.to_string()).set(1.0);
    if new {
        tracing::error!(projection = NAME, topic, partition, reason,
            "delivery partition stopped: the topic lost records it had applied (docs/runbook.md, \"The topic lost records\")");
    }
    Ok(())
}

pub(super) async fn resume_partition(
    conn: &mut PgConnection,
    topic: &str,
    partition: i32,
) -> Result<()> {
    let was_stopped = sqlx::query!(
        "DELETE FROM delivery.stopped_partitions WHERE topic = $1 AND partition = $2",
        topic,
        partition,
    )
    .execute(conn)
    .await?
    .rows_affected()
        > 0;
    metrics::gauge!("delivery_partition_stopped", "partition" => partition.to_string()).set(0.0);
    if was_stopped {
        tracing::warn!(
            projection = NAME,
            topic,
            partition,
            "delivery partition resumed"
        );
    }
    Ok(())
}
