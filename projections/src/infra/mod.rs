//! What the write side and the read side both use, in one home: reading
//! event rows, the failpoints tests arm, Kafka, leadership leases and the
//! session locks of rebuilds, and waiting (for news on the log, with
//! backoff, until shutdown).

pub mod broker;
pub mod failpoint;
pub mod kafka;
pub mod lease;
pub mod lock;
pub mod rows;
pub mod wait;
