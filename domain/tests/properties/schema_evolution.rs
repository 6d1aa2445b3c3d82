//! Property tests of schema evolution, the upcaster chain: a placement
//! written by an earlier build reads as the same event a current build
//! decides, a current payload is left as it is, every known version reaches
//! the current one, and a newer version or an unknown type is refused.

use domain::{
    current_version, decide, upcast, Command, DecodeError, DrinkOptions, Event, OrderState, Size,
    StoreId, Temperature,
};
use proptest::prelude::*;
use serde_json::json;

use crate::strategies::{arb_command, arb_place, arb_single_place, flat_payload, run};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

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
    fn every_event_read_straight_from_its_stored_text_is_the_event_read_through_a_value(
        first in arb_place(),
        rest in prop::collection::vec(arb_command(), 0..10),
        older in arb_single_place(),
        older_version in 1u16..=3,
    ) {
        // The log's readers decode the payload's text straight into the
        // event (no Value in between); an older version is parsed and
        // upcast. Either way, the same event as through a value.
        let mut commands = vec![Command::Place(first)];
        commands.extend(rest);
        let (_, log, _) = run(commands);
        for event in log {
            let (event_type, version) = (event.event_type(), event.schema_version());
            let text = event.payload().to_string();
            prop_assert_eq!(Event::decode_json(event_type, version, &text).ok(), Some(event.clone()));
            // Whitespace as PostgreSQL's jsonb text puts it reads the same.
            let spaced = serde_json::to_string_pretty(&event.payload()).unwrap_or_default();
            prop_assert_eq!(Event::decode_json(event_type, version, &spaced).ok(), Some(event));
        }
        let payload = flat_payload(&older, older_version);
        let through_value = Event::decode(Event::PLACED, older_version, payload.clone());
        prop_assert!(through_value.is_ok());
        prop_assert_eq!(
            Event::decode_json(Event::PLACED, older_version, &payload.to_string()).ok(),
            through_value.ok()
        );
    }

    #[test]
    fn stored_text_that_is_not_one_payload_of_a_known_type_and_version_is_refused(
        place in arb_place(),
        name in "[A-Za-z]{1,30}",
        extra in 1u16..100,
        garbage in "[ ]*[}\\]a-z0-9,\"]{1,8}",
    ) {
        prop_assume!(!Event::TYPES.contains(&name.as_str()));
        let Ok(events) = decide(&OrderState::NotPlaced, Command::Place(place)) else {
            panic!("a placement is decided")
        };
        let text = events[0].payload().to_string();
        let current = current_version(Event::PLACED).expect("a known type");
        // Something after the payload's one value.
        let trailing = Event::decode_json(Event::PLACED, current, &format!("{text}{garbage}"));
        prop_assert!(matches!(trailing, Err(DecodeError::Payload { .. })), "{:?}", trailing);
        // Cut short, at every current or older version.
        for version in 1..=current {
            let cut = Event::decode_json(Event::PLACED, version, &text[..text.len() - 1]);
            prop_assert!(matches!(cut, Err(DecodeError::Payload { .. })), "{:?}", cut);
        }
        let newer = Event::decode_json(Event::PLACED, current + extra, &text);
        prop_assert!(matches!(newer, Err(DecodeError::NewerSchema { .. })), "{:?}", newer);
        let unknown = Event::decode_json(&name, current, &text);
        prop_assert!(matches!(unknown, Err(DecodeError::UnknownType { .. })), "{:?}", unknown);
    }
}
