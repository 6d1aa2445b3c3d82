//! The operators' subcommands: the menu, the log's clock, and the
//! projections (list, status, replay, rebuild, held events and parking).

use clap::{Args, Subcommand};

/// What `show` takes (the menu's and the stores').
#[derive(Debug, Args)]
pub struct Show {
    /// Print JSON (the shape the API's GET answers) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What `set` takes (the menu's and the stores').
#[derive(Debug, Args)]
pub struct SetFile {
    /// A JSON file in the shape the API's GET answers (`-` reads standard
    /// input).
    pub file: std::path::PathBuf,
    /// Only while nothing was set yet, as a new database has it (`just
    /// run`'s samples).
    #[arg(long)]
    pub if_empty: bool,
}

#[derive(Debug, Subcommand)]
pub enum MenuCmd {
    /// The menu as customers see it (GET /menu).
    Show(Show),
    /// Replace the whole menu with a JSON file in GET /menu's shape; `[]`
    /// clears it. With --if-empty: only when no menu is set.
    Set(SetFile),
    /// Mark a drink sold out, at every store or at one (`--store`): orders
    /// of it there are refused until it is available again.
    SoldOut {
        coffee_name: String,
        /// Only at this store (`orders stores show` lists them).
        #[arg(long)]
        store: Option<String>,
    },
    /// Put a sold-out drink on sale again, at every store or at one.
    Available {
        coffee_name: String,
        /// Only at this store (sold out at every store wins over it).
        #[arg(long)]
        store: Option<String>,
    },
    /// Remove the menu: any drink at any price in range is accepted again.
    Clear,
}

#[derive(Debug, Subcommand)]
pub enum StoresCmd {
    /// The stores as customers see them (GET /stores).
    Show(Show),
    /// Replace the stores with a JSON file in GET /stores's shape. The
    /// default store (`main`) must be in it; stores left out take no new
    /// orders (their orders stay). With --if-empty: only while the chain is
    /// the default store alone.
    Set(SetFile),
}

#[derive(Debug, Subcommand)]
pub enum LogClockCmd {
    /// The largest stored transaction id, the clock and its shift.
    Status,
    /// Raise the clock past every stored transaction id (after a restore into
    /// another cluster). Stop every `orders` process first; appends wait
    /// while it runs (a fraction of a second).
    Advance {
        /// Why (kept with the clock; required).
        #[arg(long, value_parser = reason)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCmd {
    /// The known projections and the generation readers see.
    List,
    /// Each projection's position, the log head and the lag.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-apply the log to the live read model from a position (idempotent).
    Replay {
        name: String,
        /// The log position to replay from (default: the beginning).
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
        from: Option<i64>,
        /// Events per transaction.
        #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        batch_size: i64,
    },
    /// Build a new generation beside the live one, then switch atomically.
    Rebuild {
        name: String,
        /// The delivery projection only: build from a topic that no longer
        /// holds every record (deleted by retention); the model is recorded
        /// as incomplete.
        #[arg(long)]
        accept_incomplete: bool,
        /// Events per transaction.
        #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        batch_size: i64,
    },
    /// The events a projection holds back (orders waiting behind an event
    /// this build cannot read), order by order.
    Held {
        name: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Tell a projection to pass over one event it holds back, with a reason
    /// (recorded with the database role and your operating-system user);
    /// the order's later events then apply. Prefer deploying a build that
    /// can read the event: that releases it by itself.
    Park {
        name: String,
        /// The held event's id (see `orders projections held NAME`).
        #[arg(long, conflicts_with = "record", required_unless_present = "record")]
        event: Option<uuid::Uuid>,
        /// A held Kafka record, as TOPIC/PARTITION/OFFSET (the delivery projection).
        #[arg(long)]
        record: Option<String>,
        /// Why (kept in the audit trail; required).
        #[arg(long, value_parser = reason)]
        reason: String,
    },
    /// Every parking decision ever made: the audit trail.
    Parked,
}

/// A parking reason: 1 to 500 characters, not only blanks.
fn reason(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("give a reason".into());
    }
    if trimmed.chars().count() > 500 {
        return Err("at most 500 characters".into());
    }
    Ok(trimmed.to_owned())
}
