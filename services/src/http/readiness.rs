//! What `/readyz` finds ([`Readiness`]): the dependencies asked once for
//! every request of the same moment, over connections kept between calls.
//! Anyone may call `/readyz`, so a flood of calls must not become a flood of
//! database statements or broker connections: requests that arrive while a
//! probe runs, or within [`FRESH`] of its end, share its verdict, and the
//! broker is asked over one kept connection (a new one only after it
//! failed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use infra::kafka::KafkaSource;
use rskafka::client::Client;
use sqlx::PgPool;
use tokio::sync::Mutex;

/// How long a verdict answers later calls.
const FRESH: Duration = Duration::from_millis(200);

/// The last verdict and the kept broker connection. One per process.
#[derive(Default)]
pub struct Readiness {
    last: Mutex<Option<(Instant, Verdict)>>,
    broker: Mutex<Option<Arc<Client>>>,
}

/// What is asked: the write pool (can it serve), the read pool (what is
/// held), the brokers if any.
#[derive(Clone, Copy)]
pub struct Dependencies<'a> {
    pub writes: &'a PgPool,
    pub reads: &'a PgPool,
    pub kafka: Option<&'a KafkaSource>,
}

/// Whether the process can serve, and why (for operators).
#[derive(Debug, Clone)]
pub struct Verdict {
    pub ready: bool,
    /// `ready: postgres ok, kafka ok; held: …` or `not ready: …`, one line.
    pub reasons: String,
}

impl Readiness {
    /// The verdict of now: the one being found, or found within [`FRESH`],
    /// or a new one.
    pub async fn verdict(&self, asked: Dependencies<'_>) -> Verdict {
        let mut last = self.last.lock().await;
        if let Some((at, verdict)) = last.as_ref() {
            if at.elapsed() < FRESH {
                return verdict.clone();
            }
        }
        let verdict = self.probe(asked).await;
        *last = Some((Instant::now(), verdict.clone()));
        verdict
    }

    async fn probe(&self, asked: Dependencies<'_>) -> Verdict {
        let (postgres, kafka, held) = tokio::join!(
            postgres(asked.writes),
            self.kafka(asked.kafka),
            held(asked.reads)
        );
        match (postgres, kafka) {
            (Ok(p), Ok(k)) => {
                let held = held.map_or_else(String::new, |h| format!("; held: {h}"));
                Verdict {
                    ready: true,
                    reasons: format!("ready: {p}, {k}{held}\n"),
                }
            }
            (p, k) => {
                let reasons: Vec<String> = [p, k].into_iter().filter_map(Result::err).collect();
                Verdict {
                    ready: false,
                    reasons: format!("not ready: {}\n", reasons.join("; ")),
                }
            }
        }
    }

    /// The brokers answer a metadata request on the kept connection (made
    /// now if there is none, dropped if it failed).
    async fn kafka(&self, source: Option<&KafkaSource>) -> Result<String, String> {
        let Some(source) = source else {
            return Ok("kafka not configured".to_owned());
        };
        let mut kept = self.broker.lock().await;
        let probe = async {
            let client = match kept.as_ref() {
                Some(client) => client.clone(),
                None => Arc::new(source.connect(Duration::from_secs(2)).await?),
            };
            client.list_topics().await?;
            Ok::<_, anyhow::Error>(client)
        };
        match tokio::time::timeout(Duration::from_secs(3), probe).await {
            Ok(Ok(client)) => {
                *kept = Some(client);
                Ok("kafka ok".to_owned())
            }
            Ok(Err(e)) => {
                *kept = None;
                Err(format!("kafka: {e:#}"))
            }
            Err(_) => {
                *kept = None;
                Err("kafka did not answer within 3s".to_owned())
            }
        }
    }
}

async fn postgres(writes: &PgPool) -> Result<String, String> {
    match tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query!("SELECT 1 AS alive").fetch_one(writes),
    )
    .await
    {
        Ok(Ok(_)) => Ok("postgres ok".to_owned()),
        Ok(Err(e)) => Err(format!("postgres: {e}")),
        Err(_) => Err("postgres did not answer within 2s".to_owned()),
    }
}

/// The orders each projection holds back, if any.
async fn held(reads: &PgPool) -> Option<String> {
    let summary = async {
        let mut conn = reads.acquire().await.ok()?;
        let summary = projections::held::summary(&mut conn).await.ok()?;
        let lines: Vec<String> = summary
            .iter()
            .filter(|h| h.orders > 0)
            .map(|h| {
                let first = h.first.as_ref().map_or_else(String::new, |f| {
                    format!(
                        " from event {} ({} v{}, {}): {}",
                        f.event_id, f.event_type, f.schema_version, f.source, f.reason
                    )
                });
                format!("{} holds back {} order(s){first}", h.projection, h.orders)
            })
            .collect();
        (!lines.is_empty()).then(|| lines.join("; "))
    };
    tokio::time::timeout(Duration::from_secs(2), summary)
        .await
        .ok()
        .flatten()
}
