//! The pure coffee-order model: value types that can only be built by parsing,
//! the commands staff and customers issue, the events they produce, and the two
//! functions that give them meaning, [`decide`] and [`evolve`].
//!
//! Nothing here does I/O or is async: everything a decision needs is loaded by
//! the caller and passed in, so every rule can be tested by plain function calls.

#![deny(unsafe_code)]

mod envelope;
mod error;
mod event;
mod line;
mod menu;
mod options;
mod order;
mod status;
mod store;
mod upcast;
mod values;

pub use envelope::{EventEnvelope, Metadata, StoredEvent};
pub use error::{DecodeError, DomainError, ValueError};
pub use event::{CancelledBy, Event, OrderCancelled, OrderPlaced};
pub use line::{OrderLine, OrderLines};
pub use menu::{AskedLine, Drink, Menu, MenuError, OffMenu};
pub use options::{AskedOptions, DrinkOptions, OptionValue, Size, Temperature};
pub use order::{decide, evolve, fold, Command, Order, OrderState, PlaceOrder};
pub use status::Status;
pub use store::{SoldOut, Store, StoreError, Stores};
pub use upcast::{current_version, upcast};
pub use values::{whole_number, CoffeeName, OrderId, Price, Quantity, StoreId, UserId, Won};
