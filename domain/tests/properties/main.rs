//! Property tests: the invariants hold for any command sequence, replaying the
//! emitted events reproduces the state, events round-trip through JSON, and
//! input parsing accepts exactly what the HTTP contract kept beside the repository (API.md) allows.

mod parsing;
mod schema_evolution;
mod sequences;
mod strategies;
