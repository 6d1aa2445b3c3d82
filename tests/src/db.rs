//! A database of each test's own: created, migrated, dropped with the test.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

/// The server's `DATABASE_URL`, or a panic that says how to get one.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!("DATABASE_URL is not set: run the tests with `just test`, which starts PostgreSQL first")
    })
}

/// A fresh, migrated database of its own for one test.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
    /// The PostgreSQL cluster of this database's own ([`TestDb::alone`]),
    /// stopped and removed with it; `None`: the shared one (`DATABASE_URL`).
    cluster: Option<crate::processes::OwnCluster>,
}

impl TestDb {
    pub async fn create() -> TestDb {
        TestDb::migrated(TestDb::empty().await).await
    }

    /// A fresh, migrated database on a PostgreSQL cluster of its own, for a
    /// test that holds the transaction horizon (a long transaction): the
    /// horizon is the whole cluster's, so on the shared cluster it would
    /// stall every other test's log readers for as long (a strong read of
    /// another test answered 503 while one held it for 10 s).
    pub async fn alone() -> TestDb {
        let cluster = crate::processes::OwnCluster::new("orders-alone");
        let server = crate::processes::start_cluster(&cluster.base).await;
        let mut db = TestDb::empty_on(&server).await;
        db.cluster = Some(cluster);
        TestDb::migrated(db).await
    }

    /// Whether the database has a cluster of its own.
    pub fn is_alone(&self) -> bool {
        self.cluster.is_some()
    }

    async fn migrated(db: TestDb) -> TestDb {
        services::db::migrate(&db.pool)
            .await
            .expect("migrate the test database");
        db
    }

    /// A fresh database of its own, without the service's tables (for
    /// another program's storage: a broker's).
    pub async fn empty() -> TestDb {
        TestDb::empty_on(&database_url()).await
    }

    /// [`TestDb::empty`] on the server of `server` (a database URL).
    async fn empty_on(server: &str) -> TestDb {
        let base = PgConnectOptions::from_str(server).expect("DATABASE_URL is not a valid URL");
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = base
            .clone()
            .database("postgres")
            .connect()
            .await
            .unwrap_or_else(|e| {
                panic!("cannot reach PostgreSQL at DATABASE_URL ({e}); run `just test`")
            });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        admin.close().await.ok();
        let options = base.database(&name);
        let url = options.to_url_lossy().to_string();
        let pool = PgPoolOptions::new()
            .max_connections(40)
            .connect_with(options)
            .await
            .expect("connect to the test database");
        TestDb {
            name,
            url,
            pool,
            cluster: None,
        }
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .expect(sql)
    }

    /// Rows in the event log.
    pub async fn events(&self) -> i64 {
        self.count("SELECT count(*) FROM events").await
    }

    /// Rows waiting in the outbox.
    pub async fn outbox(&self) -> i64 {
        self.count("SELECT count(*) FROM outbox").await
    }
}

/// A passing test's database is dropped when the test ends (a hundred tests'
/// databases add up on a CI machine short of disk); a failing test's is kept
/// for the post-mortem, as is every one when `TEST_KEEP_DATABASES` is set.
/// `just test` drops the kept ones at its next start.
impl Drop for TestDb {
    fn drop(&mut self) {
        // A cluster of its own goes whole (its own Drop), passed or failed.
        if self.cluster.is_some()
            || std::thread::panicking()
            || std::env::var_os("TEST_KEEP_DATABASES").is_some()
        {
            return;
        }
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on:
        // a short-lived thread with its own runtime does the work.
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let admin = PgConnectOptions::from_str(&database_url()).ok()?;
                let mut conn = admin.database("postgres").connect().await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .ok()?;
                conn.close().await.ok()
            })
        });
        // Best effort: a database left behind is dropped by the next run.
        let _ = dropper.join();
    }
}
