//! The generators the property tests draw from: commands, placements of one
//! drink or several at any store, the flat payload of the earliest schema
//! versions, and a runner that applies commands as the store would.

use domain::{
    decide, evolve, CoffeeName, Command, DrinkOptions, Event, OptionValue, OrderId, OrderLine,
    OrderLines, OrderState, PlaceOrder, Price, Quantity, Size, Status, StoreId, Temperature,
    UserId,
};
use proptest::prelude::*;
use serde_json::{json, Value};

fn arb_status() -> impl Strategy<Value = Status> {
    prop::sample::select(Status::ALL.to_vec())
}

pub(crate) fn arb_line() -> impl Strategy<Value = OrderLine> {
    (
        "[^\\p{Cc}]{0,20}[a-z가-힣][^\\p{Cc}]{0,20}",
        0u64..=Price::MAX,
        Quantity::MIN..=Quantity::MAX,
        arb_options(),
    )
        .prop_map(|(name, price, qty, options)| OrderLine {
            coffee_name: CoffeeName::parse(&name).expect("generated valid"),
            coffee_price: Price::try_from(price).expect("in range"),
            coffee_qty: Quantity::try_from(qty).expect("in range"),
            options,
        })
}

fn arb_store() -> impl Strategy<Value = StoreId> {
    prop_oneof![
        1 => Just(StoreId::default_store()),
        2 => "[A-Za-z0-9._-]{1,40}".prop_map(|s| StoreId::parse(&s).expect("generated valid")),
    ]
}

pub(crate) fn arb_place() -> impl Strategy<Value = PlaceOrder> {
    (
        "[A-Za-z0-9._-]{1,100}",
        arb_store(),
        prop::collection::vec(arb_line(), 1..=OrderLines::MAX),
        any::<u128>(),
    )
        .prop_map(|(user, store_id, lines, bits)| PlaceOrder {
            pickup_number: u32::try_from(bits % 1000).ok(),
            order_id: v7(bits),
            user_id: UserId::parse(&user).expect("generated valid"),
            store_id,
            lines: OrderLines::new(lines).expect("1 to 20 lines"),
        })
}

/// A placement of one drink at the default store: what every order placed
/// before schema version 4 was.
pub(crate) fn arb_single_place() -> impl Strategy<Value = PlaceOrder> {
    (arb_place(), arb_line()).prop_map(|(place, line)| PlaceOrder {
        store_id: StoreId::default_store(),
        lines: OrderLines::one(line),
        ..place
    })
}

/// The flat single-drink payload that schema versions 1 to 3 wrote.
pub(crate) fn flat_payload(place: &PlaceOrder, version: u16) -> Value {
    let line = place.lines.first();
    let mut payload = json!({
        "order_id": place.order_id,
        "user_id": place.user_id,
        "coffee_name": line.coffee_name,
        "coffee_price": line.coffee_price,
        "coffee_qty": line.coffee_qty,
        "total_price": line.line_price(),
    });
    if version >= 2 {
        payload["options"] = json!(line.options);
    }
    if version >= 3 {
        payload["pickup_number"] = json!(place.pickup_number);
    }
    payload
}

fn arb_options() -> impl Strategy<Value = DrinkOptions> {
    (
        prop::sample::select(Temperature::ALL.to_vec()),
        prop::sample::select(Size::ALL.to_vec()),
    )
        .prop_map(|(temperature, size)| DrinkOptions { temperature, size })
}

/// A UUID v7 made from arbitrary bits (the timestamp from the high ones).
pub(crate) fn v7(bits: u128) -> OrderId {
    let random: [u8; 10] = bits.to_le_bytes()[..10].try_into().expect("10 bytes");
    let uuid = uuid::Builder::from_unix_timestamp_millis((bits >> 80) as u64, &random).into_uuid();
    OrderId::try_from(uuid).expect("a v7 uuid")
}

pub(crate) fn arb_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        1 => arb_place().prop_map(Command::Place),
        4 => arb_status().prop_map(|to| Command::MoveTo { to }),
        1 => Just(Command::Cancel),
    ]
}

/// Runs every command in turn against the evolving state, as the store would.
pub(crate) fn run(commands: Vec<Command>) -> (OrderState, Vec<Event>, Vec<OrderState>) {
    let mut state = OrderState::NotPlaced;
    let mut log = Vec::new();
    let mut states = vec![state.clone()];
    for command in commands {
        if let Ok(events) = decide(&state, command) {
            for event in events {
                state = evolve(state, &event);
                log.push(event);
                states.push(state.clone());
            }
        }
    }
    (state, log, states)
}
