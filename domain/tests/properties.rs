//! Property tests: the invariants hold for any command sequence, replaying the
//! emitted events reproduces the state, events round-trip through JSON, and
//! input parsing accepts exactly what the HTTP contract kept beside the repository (API.md) allows.

use domain::{
    current_version, decide, evolve, fold, upcast, whole_number, CoffeeName, Command, DecodeError,
    DrinkOptions, Event, EventEnvelope, Metadata, OptionValue, OrderId, OrderLine, OrderLines,
    OrderState, PlaceOrder, Price, Quantity, Size, Status, StoreId, Temperature, UserId,
    ValueError, Won,
};
use proptest::prelude::*;
use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

fn arb_status() -> impl Strategy<Value = Status> {
    prop::sample::select(Status::ALL.to_vec())
}

fn arb_line() -> impl Strategy<Value = OrderLine> {
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

fn arb_place() -> impl Strategy<Value = PlaceOrder> {
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
fn arb_single_place() -> impl Strategy<Value = PlaceOrder> {
    (arb_place(), arb_line()).prop_map(|(place, line)| PlaceOrder {
        store_id: StoreId::default_store(),
        lines: OrderLines::one(line),
        ..place
    })
}

/// The flat single-drink payload that schema versions 1 to 3 wrote.
fn flat_payload(place: &PlaceOrder, version: u16) -> Value {
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
fn v7(bits: u128) -> OrderId {
    let random: [u8; 10] = bits.to_le_bytes()[..10].try_into().expect("10 bytes");
    let uuid = uuid::Builder::from_unix_timestamp_millis((bits >> 80) as u64, &random).into_uuid();
    OrderId::try_from(uuid).expect("a v7 uuid")
}

fn arb_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        1 => arb_place().prop_map(Command::Place),
        4 => arb_status().prop_map(|to| Command::MoveTo { to }),
        1 => Just(Command::Cancel),
    ]
}

/// The lifecycle table of the design kept beside the repository (ARCHITECTURE.md), written out independently of the code.
const ALLOWED_MOVES: [(Status, Status); 5] = [
    (Status::Received, Status::Preparing),
    (Status::Received, Status::Cancelled),
    (Status::Preparing, Status::Delivering),
    (Status::Preparing, Status::Cancelled),
    (Status::Delivering, Status::Delivered),
];

/// Runs every command in turn against the evolving state, as the store would.
fn run(commands: Vec<Command>) -> (OrderState, Vec<Event>, Vec<OrderState>) {
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_command_sequence_keeps_the_invariants(
        first in arb_place(),
        rest in prop::collection::vec(arb_command(), 0..40),
    ) {
        let mut commands = vec![Command::Place(first)];
        commands.extend(rest);
        let (_, log, states) = run(commands);
        for pair in states.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            // Versions are contiguous: every event adds exactly one.
            prop_assert_eq!(after.version(), before.version() + 1);
            let after = after.order().expect("placed after the first event");
            // Totals are the sum of price × quantity over the lines, always.
            let sum: u64 = after.lines.iter().map(|l| u64::from(l.coffee_price) * l.coffee_qty.get()).sum();
            prop_assert_eq!(after.total_price.0, sum);
            if let Some(before) = before.order() {
                // Nothing ever leaves a final state, and every move is one the
                // lifecycle table (ARCHITECTURE.md) allows.
                prop_assert!(!matches!(before.status, Status::Delivered | Status::Cancelled));
                prop_assert!(ALLOWED_MOVES.contains(&(before.status, after.status)),
                    "{:?} -> {:?} is not in the lifecycle table", before.status, after.status);
                // The order's facts never change after placement.
                prop_assert_eq!(&before.lines, &after.lines);
                prop_assert_eq!(&before.store_id, &after.store_id);
                prop_assert_eq!(before.total_price, after.total_price);
            }
        }
        // Only the first event of a stream is a placement.
        prop_assert!(log.iter().skip(1).all(|e| !matches!(e, Event::OrderPlaced(_))));
    }

    #[test]
    fn replaying_the_emitted_events_reproduces_the_state(
        first in arb_place(),
        rest in prop::collection::vec(arb_command(), 0..40),
    ) {
        let mut commands = vec![Command::Place(first)];
        commands.extend(rest);
        let (state, log, _) = run(commands);
        prop_assert_eq!(fold(&log), state);
    }

    #[test]
    fn a_rejected_command_changes_nothing(
        first in arb_place(),
        rest in prop::collection::vec(arb_command(), 0..20),
        probe in arb_command(),
    ) {
        let mut commands = vec![Command::Place(first)];
        commands.extend(rest);
        let (state, _, _) = run(commands);
        if let Err(_rejection) = decide(&state, probe.clone()) {
            // decide is pure: the same question gets the same answer.
            prop_assert!(decide(&state, probe).is_err());
        }
    }

    #[test]
    fn every_event_round_trips_through_json(
        first in arb_place(),
        rest in prop::collection::vec(arb_command(), 0..20),
        request in proptest::option::of("[a-z0-9-]{1,36}"),
    ) {
        let mut commands = vec![Command::Place(first)];
        commands.extend(rest);
        let (_, log, _) = run(commands);
        let stream_id = match &log[0] { Event::OrderPlaced(p) => p.order_id, _ => unreachable!() };
        for (i, event) in log.into_iter().enumerate() {
            // Through the stored form (type, schema version, payload)…
            let decoded = Event::decode(event.event_type(), event.schema_version(), event.payload());
            let decoded = decoded.ok();
            prop_assert_eq!(decoded.as_ref(), Some(&event));
            // …and through the envelope's wire form.
            let envelope = EventEnvelope {
                event_id: Uuid::now_v7(),
                stream_id,
                version: i as u64 + 1,
                position: Some(i as i64 + 10),
                event,
                metadata: Metadata { request_id: request.clone(), correlation_id: request.clone(), ..Metadata::default() },
                recorded_at: OffsetDateTime::from_unix_timestamp(1_790_000_000).expect("valid"),
            };
            let json = serde_json::to_string(&envelope).expect("serialises");
            let back: EventEnvelope = serde_json::from_str(&json).expect("deserialises");
            prop_assert_eq!(back, envelope);
        }
    }

    // --- schema evolution: the upcaster chain ---

    #[test]
    fn a_v1_placement_reads_as_one_hot_regular_line_at_the_default_store_with_every_fact_kept(
        place in arb_single_place(),
    ) {
        // Exactly what the first build wrote: v1, no options member.
        let event = Event::decode(Event::PLACED, 1, flat_payload(&place, 1))
            .expect("a v1 placement decodes");
        let Event::OrderPlaced(p) = event else { panic!("a placement") };
        let line = place.lines.first();
        prop_assert_eq!(p.lines.len(), 1);
        let read = p.lines.first();
        prop_assert_eq!(read.options, DrinkOptions { temperature: Temperature::Hot, size: Size::Regular });
        prop_assert_eq!(p.order_id, place.order_id);
        prop_assert_eq!(&p.user_id, &place.user_id);
        prop_assert_eq!(&p.store_id, &StoreId::default_store());
        prop_assert_eq!(&read.coffee_name, &line.coffee_name);
        prop_assert_eq!(read.coffee_price, line.coffee_price);
        prop_assert_eq!(read.coffee_qty, line.coffee_qty);
        prop_assert_eq!(p.total_price, line.line_price());
        prop_assert_eq!(p.pickup_number, None);
    }

    #[test]
    fn a_single_drink_placement_written_as_v2_or_v3_reads_as_the_same_event_as_v4(
        place in arb_single_place(),
        version in 2u16..=3,
    ) {
        // The same order, decided now (v4), and as the earlier build wrote
        // it: one line at the default store, the same facts.
        let Ok(events) = decide(&OrderState::NotPlaced, Command::Place(place.clone())) else {
            panic!("a placement is decided")
        };
        let mut expected = events[0].clone();
        if version == 2 {
            // v2 had no pickup numbers.
            if let Event::OrderPlaced(p) = &mut expected { p.pickup_number = None; }
        }
        let read = Event::decode(Event::PLACED, version, flat_payload(&place, version));
        prop_assert_eq!(read.ok(), Some(expected));
    }

    #[test]
    fn an_orders_total_is_the_sum_of_its_lines(place in arb_place()) {
        let sum: u64 = place.lines.iter().map(|l| l.coffee_price.times(l.coffee_qty).0).sum();
        let Ok(events) = decide(&OrderState::NotPlaced, Command::Place(place.clone())) else {
            panic!("a placement is decided")
        };
        let Event::OrderPlaced(p) = &events[0] else { panic!("a placement") };
        prop_assert_eq!(p.total_price, Won(sum));
        prop_assert_eq!(&p.lines, &place.lines);
        let state = fold(&events);
        let order = state.order().expect("placed");
        prop_assert_eq!(order.total_price, Won(sum));
        prop_assert_eq!(&order.lines, &place.lines);
        prop_assert_eq!(&order.store_id, &place.store_id);
    }

    #[test]
    fn an_order_holds_1_to_20_lines(count in 0usize..40, line in arb_line()) {
        let lines = OrderLines::new(vec![line; count]);
        prop_assert_eq!(lines.is_ok(), (1..=20).contains(&count));
    }

    #[test]
    fn store_ids_are_1_to_40_safe_characters(s in "\\PC{0,50}") {
        let ok = !s.is_empty()
            && s.chars().count() <= 40
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        prop_assert_eq!(StoreId::parse(&s).is_ok(), ok);
    }

    #[test]
    fn upcasting_a_current_payload_changes_nothing(
        first in arb_place(),
        rest in prop::collection::vec(arb_command(), 0..10),
    ) {
        let mut commands = vec![Command::Place(first)];
        commands.extend(rest);
        let (_, log, _) = run(commands);
        for event in log {
            let version = event.schema_version();
            prop_assert_eq!(Some(version), current_version(event.event_type()));
            let payload = event.payload();
            prop_assert_eq!(upcast(event.event_type(), version, payload.clone()).ok(), Some(payload));
        }
    }

    #[test]
    fn every_known_version_of_every_type_upcasts_to_the_current_one(
        type_index in 0usize..5,
        extra in 1u16..100,
    ) {
        let event_type = Event::TYPES[type_index];
        let current = current_version(event_type).expect("a known type");
        for version in 1..=current {
            let upcasted = upcast(event_type, version, json!({}));
            prop_assert!(upcasted.is_ok(), "version {} of {}", version, event_type);
        }
        // A version from a newer build is refused, naming what this build knows.
        let newer = upcast(event_type, current + extra, json!({}));
        let is_newer = matches!(
            newer,
            Err(DecodeError::NewerSchema { schema_version, known, .. })
                if schema_version == current + extra && known == current
        );
        prop_assert!(is_newer);
    }

    #[test]
    fn unknown_event_types_are_refused_at_any_version(name in "[A-Za-z]{1,30}", version in 0u16..10) {
        prop_assume!(!Event::TYPES.contains(&name.as_str()));
        let unknown = matches!(Event::decode(&name, version, json!({})), Err(DecodeError::UnknownType { .. }));
        prop_assert!(unknown);
    }

    #[test]
    fn options_parse_from_codes_and_labels_and_nothing_else(s in prop_oneof![
        "\\PC{0,10}",
        prop::sample::select(vec![" hot", "Iced", "핫", "아이스 ", "regular", "LARGE", "레귤러", "라지", "Hot!"])
            .prop_map(String::from),
    ]) {
        let t = s.trim();
        let temperature = match t.to_ascii_lowercase().as_str() {
            "hot" => Some(Temperature::Hot),
            "iced" => Some(Temperature::Iced),
            _ if t == "핫" => Some(Temperature::Hot),
            _ if t == "아이스" => Some(Temperature::Iced),
            _ => None,
        };
        prop_assert_eq!(Temperature::parse(&s).ok(), temperature);
        let size = match t.to_ascii_lowercase().as_str() {
            "regular" => Some(Size::Regular),
            "large" => Some(Size::Large),
            _ if t == "레귤러" => Some(Size::Regular),
            _ if t == "라지" => Some(Size::Large),
            _ => None,
        };
        prop_assert_eq!(Size::parse(&s).ok(), size);
    }

    // --- parsing accepts exactly what the contract (API.md) allows ---

    #[test]
    fn prices_accept_whole_won_from_0_to_1_000_000_as_numbers_or_strings(n in -2_000_000i64..3_000_000) {
        let ok = (0..=1_000_000).contains(&n);
        prop_assert_eq!(Price::from_json(&json!(n)).is_ok(), ok);
        let as_text = Price::from_json(&json!(n.to_string()));
        // Strings are digits only: a minus sign is never a number here.
        prop_assert_eq!(as_text.is_ok(), ok);
        if ok {
            prop_assert_eq!(u64::from(as_text.expect("ok")), n as u64);
            prop_assert_eq!(u64::from(Price::from_json(&json!(format!(" {n} "))).expect("trimmed")), n as u64);
        }
    }

    #[test]
    fn quantities_accept_1_to_1000_as_numbers_or_strings(n in -10i64..2_000) {
        let ok = (1..=1_000).contains(&n);
        prop_assert_eq!(Quantity::from_json(Some(&json!(n))).is_ok(), ok);
        prop_assert_eq!(Quantity::from_json(Some(&json!(n.to_string()))).is_ok(), ok);
    }

    #[test]
    fn numeric_text_is_only_ascii_digits(s in "\\PC{0,12}") {
        let digits = s.trim();
        let expected = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        prop_assert_eq!(whole_number(&Value::String(s.clone())).is_ok(), expected);
    }

    #[test]
    fn fractional_numbers_are_rejected(whole in 0u32..1000, frac in 1u32..1000) {
        let x: f64 = f64::from(whole) + f64::from(frac) / 1000.0;
        prop_assert_eq!(whole_number(&json!(x)), Err(ValueError::NotAWholeNumber));
        let text = format!("{whole}.{frac}");
        prop_assert!(whole_number(&json!(text)).is_err());
    }

    #[test]
    fn user_ids_are_1_to_100_safe_characters(s in "\\PC{0,120}") {
        let expected = (1..=100).contains(&s.chars().count())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        prop_assert_eq!(UserId::parse(&s).is_ok(), expected);
    }

    #[test]
    fn coffee_names_are_1_to_100_characters_after_trimming(s in "\\PC{0,120}") {
        let t = s.trim();
        let expected = !t.is_empty() && t.chars().count() <= 100 && !t.chars().any(char::is_control);
        let parsed = CoffeeName::parse(&s);
        prop_assert_eq!(parsed.is_ok(), expected);
        if let Ok(name) = parsed {
            prop_assert_eq!(name.as_str(), t);
        }
    }

    #[test]
    fn order_ids_are_uuid_v7_only(bits in any::<u128>()) {
        let random = uuid::Builder::from_random_bytes(bits.to_le_bytes()).into_uuid(); // v4
        prop_assert!(OrderId::parse(&random.to_string()).is_err());
        let id = v7(bits);
        prop_assert_eq!(OrderId::parse(&id.to_string()), Ok(id));
    }
}

#[test]
fn absent_or_null_quantity_means_one() {
    assert_eq!(Quantity::from_json(None).map(Quantity::get), Ok(1));
    assert_eq!(
        Quantity::from_json(Some(&Value::Null)).map(Quantity::get),
        Ok(1)
    );
}

#[test]
fn non_numbers_are_not_whole_numbers() {
    for v in [
        json!(true),
        json!([1]),
        json!({"n": 1}),
        json!(""),
        json!("1e3"),
        json!("+5"),
        json!("0x10"),
        json!("５"),
    ] {
        assert_eq!(whole_number(&v), Err(ValueError::NotAWholeNumber), "{v}");
    }
    assert_eq!(whole_number(&json!(3.0)), Ok(3));
    assert!(Price::from_json(&json!(1e300)).is_err());
    assert!(Price::from_json(&json!("99999999999999999999999999999999999999999")).is_err());
}

#[test]
fn options_in_a_body_default_and_accept_labels() {
    let parse = |v: Value| DrinkOptions::from_json(Some(&v));
    assert_eq!(DrinkOptions::from_json(None), Ok(DrinkOptions::default()));
    assert_eq!(
        parse(json!({"temperature": "아이스", "size": "라지"})),
        Ok(DrinkOptions {
            temperature: Temperature::Iced,
            size: Size::Large
        })
    );
    assert_eq!(
        parse(json!({"size": "large"})),
        Ok(DrinkOptions {
            temperature: Temperature::Hot,
            size: Size::Large
        })
    );
    let fields = |r: Result<DrinkOptions, Vec<(&'static str, ValueError)>>| {
        r.err()
            .unwrap_or_default()
            .into_iter()
            .map(|(f, _)| f)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        fields(parse(json!({"temperature": "warm", "size": 3}))),
        ["options.temperature", "options.size"]
    );
    assert_eq!(fields(parse(json!("iced"))), ["options"]);
    assert_eq!(fields(parse(json!({"milk": "oat"}))), ["options"]);
}
