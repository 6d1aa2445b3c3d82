//! Property tests of command sequences: the invariants hold for any sequence,
//! replaying the emitted events reproduces the state, a rejected command
//! changes nothing, every event round-trips through JSON, and an order's
//! total is the sum of its lines.

use domain::{decide, fold, Command, Event, EventEnvelope, Metadata, OrderState, Status, Won};
use proptest::prelude::*;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::strategies::{arb_command, arb_place, run};

/// The lifecycle table of the design kept beside the repository (ARCHITECTURE.md), written out independently of the code.
const ALLOWED_MOVES: [(Status, Status); 5] = [
    (Status::Received, Status::Preparing),
    (Status::Received, Status::Cancelled),
    (Status::Preparing, Status::Delivering),
    (Status::Preparing, Status::Cancelled),
    (Status::Delivering, Status::Delivered),
];

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
}
