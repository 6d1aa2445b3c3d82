//! Logging to stderr (stdout is for commands' output): `RUST_LOG` filters;
//! human-readable on a terminal, JSON lines otherwise (for log shippers).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The filter when `RUST_LOG` is not set, for long-running processes.
pub const SERVICE_LOGS: &str = "info,sqlx=warn,rskafka=warn,tower_http=info";
/// The filter when `RUST_LOG` is not set, for operators' one-shot commands.
pub const COMMAND_LOGS: &str = "warn";

pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    }
}
