//! `orders`: parses the configuration, connects, migrates, starts the
//! requested parts and waits for a shutdown signal.

use anyhow::Context;
use clap::Parser;
use services::config::{Cli, Cmd};
use services::http::{self, AppState};
use services::orders::Orders;
use services::store::EventStore;
use services::{db, shutdown, telemetry};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init();
    let pool = db::connect(cli.db.url()?, cli.db.db_max_connections)
        .await
        .context("cannot connect to PostgreSQL (is DATABASE_URL right, and is the server up?)")?;
    db::migrate(&pool)
        .await
        .context("cannot apply migrations")?;
    match cli.command {
        Cmd::Migrate => {
            tracing::info!("migrations applied");
            Ok(())
        }
        Cmd::Serve(args) => {
            let token = CancellationToken::new();
            shutdown::on_signal(token.clone());
            let listener = tokio::net::TcpListener::bind(args.http_addr)
                .await
                .with_context(|| format!("cannot listen on {}", args.http_addr))?;
            let state = AppState {
                orders: Orders::new(EventStore::new(pool.clone())),
                port: listener.local_addr()?.port(),
                pool: pool.clone(),
            };
            http::serve(listener, state, args.api, token).await?;
            pool.close().await;
            tracing::info!("stopped");
            Ok(())
        }
    }
}
