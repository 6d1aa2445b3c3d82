//! Logging to stderr (stdout is for commands' output): `RUST_LOG` filters;
//! human-readable on a terminal, JSON lines otherwise (for log shippers).

use std::io::IsTerminal;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// The filter when `RUST_LOG` is not set, for long-running processes.
pub const SERVICE_LOGS: &str = "info,sqlx=warn,rskafka=warn,tower_http=info";
/// The filter when `RUST_LOG` is not set, for operators' one-shot commands.
pub const COMMAND_LOGS: &str = "warn";

///
/// Lines are written by a background thread (`tracing-appender`): a request
/// formats its line and moves on instead of making a `write` system call of
/// its own (at a few thousand requests a second those calls showed in the
/// profile). Nothing is dropped: when the buffer is full, the logger waits.
/// Keep the returned guard alive: dropping it flushes what is buffered.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(default_filter: &str) -> WorkerGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let terminal = std::io::stderr().is_terminal();
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if terminal {
        builder.init();
    } else {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    }
    guard
}
