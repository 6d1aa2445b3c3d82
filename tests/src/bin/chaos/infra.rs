//! The run's own PostgreSQL cluster and database.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sqlx::postgres::PgPoolOptions;
use tokio::process::Command;

pub(crate) struct Postgres {
    pub(crate) script: PathBuf,
    pub(crate) base: PathBuf,
}

impl Postgres {
    pub(crate) fn new(root: &Path, dir: &Path) -> Postgres {
        Postgres {
            script: root.join("scripts/postgres.sh"),
            base: dir.join("pg"),
        }
    }

    pub(crate) fn command(&self, arg: Option<&str>) -> Command {
        let mut c = Command::new(&self.script);
        c.args(arg)
            .env("PG_BASE", &self.base)
            .env_remove("DATABASE_URL")
            .stderr(Stdio::inherit());
        c
    }

    /// Starts the cluster (creating it on first use); its URL.
    pub(crate) async fn start(&self) -> Result<String> {
        let out = self.command(None).output().await?;
        if !out.status.success() {
            bail!("scripts/postgres.sh failed");
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("export DATABASE_URL="))
            .map(|u| u.trim_matches('\'').to_owned())
            .context("scripts/postgres.sh printed no DATABASE_URL")
    }

    pub(crate) async fn crash(&self) -> Result<()> {
        self.command(Some("crash")).status().await?;
        Ok(())
    }
}

/// The cluster is the run's own: it stops with the run, however that ends.
impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.script)
            .arg("stop")
            .env("PG_BASE", &self.base)
            .env_remove("DATABASE_URL")
            .status();
    }
}

/// Drops and creates `name` on the cluster; the URL of the new database.
pub(crate) async fn fresh_database(cluster_url: &str, name: &str) -> Result<String> {
    let (prefix, _) = cluster_url
        .rsplit_once('/')
        .context("a database URL ends in /<database>")?;
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{prefix}/postgres"))
        .await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await?;
    admin.close().await;
    Ok(format!("{prefix}/{name}"))
}

pub(crate) async fn sleep_until(at: Instant) {
    tokio::time::sleep_until(at.into()).await;
}
