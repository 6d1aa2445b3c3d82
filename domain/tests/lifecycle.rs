//! Given/when/then tests: one per lifecycle rule in the status table of ARCHITECTURE.md (the design kept beside the repository).

use domain::{
    decide, fold, CancelledBy, CoffeeName, Command, DomainError, Event, OrderCancelled, OrderId,
    OrderLine, OrderLines, OrderPlaced, PlaceOrder, Price, Quantity, Status, StoreId, UserId, Won,
};
use domain::{DrinkOptions, Size, Temperature};

struct Given(Vec<Event>);
struct When(Vec<Event>, Command);

fn given(events: impl IntoIterator<Item = Event>) -> Given {
    Given(events.into_iter().collect())
}

impl Given {
    fn when(self, command: Command) -> When {
        When(self.0, command)
    }
}

impl When {
    fn decided(&self) -> Result<Vec<Event>, DomainError> {
        decide(&fold(&self.0), self.1.clone())
    }

    #[track_caller]
    fn then(self, expected: impl IntoIterator<Item = Event>) {
        assert_eq!(self.decided(), Ok(expected.into_iter().collect()));
    }

    #[track_caller]
    fn then_rejected(self, expected: DomainError) {
        assert_eq!(self.decided(), Err(expected));
    }
}

fn id() -> OrderId {
    OrderId::parse("0193a6f0-0000-7000-8000-000000000001").expect("a v7 uuid")
}

fn place() -> PlaceOrder {
    PlaceOrder {
        order_id: id(),
        user_id: UserId::parse("USER0001").expect("valid"),
        store_id: StoreId::parse("gangnam").expect("valid"),
        lines: OrderLines::one(OrderLine {
            coffee_name: CoffeeName::parse("today's coffee").expect("valid"),
            coffee_price: Price::try_from(5000).expect("valid"),
            coffee_qty: Quantity::try_from(3).expect("valid"),
            options: DrinkOptions {
                temperature: Temperature::Iced,
                size: Size::Large,
            },
        }),
        pickup_number: Some(7),
    }
}

fn placed() -> Event {
    let p = place();
    Event::OrderPlaced(OrderPlaced {
        order_id: p.order_id,
        user_id: p.user_id,
        store_id: p.store_id,
        lines: p.lines,
        total_price: Won(15_000),
        pickup_number: p.pickup_number,
    })
}

fn cancelled(by: CancelledBy) -> Event {
    Event::OrderCancelled(OrderCancelled { by })
}

fn move_to(to: Status) -> Command {
    Command::MoveTo { to }
}

fn invalid(from: Status, to: Status) -> DomainError {
    DomainError::InvalidTransition { from, to }
}

#[test]
fn placing_a_new_order_records_it_with_its_total() {
    given([]).when(Command::Place(place())).then([placed()]);
}

#[test]
fn an_order_cannot_be_placed_twice() {
    given([placed()])
        .when(Command::Place(place()))
        .then_rejected(DomainError::AlreadyPlaced);
}

#[test]
fn moves_and_cancels_need_a_placed_order() {
    given([])
        .when(move_to(Status::Preparing))
        .then_rejected(DomainError::NotPlaced);
    given([])
        .when(Command::Cancel)
        .then_rejected(DomainError::NotPlaced);
}

#[test]
fn received_moves_to_preparing() {
    given([placed()])
        .when(move_to(Status::Preparing))
        .then([Event::OrderPreparationStarted]);
}

#[test]
fn received_can_be_cancelled_by_staff_or_customer() {
    given([placed()])
        .when(move_to(Status::Cancelled))
        .then([cancelled(CancelledBy::Staff)]);
    given([placed()])
        .when(Command::Cancel)
        .then([cancelled(CancelledBy::Customer)]);
}

#[test]
fn received_cannot_skip_ahead() {
    for to in [Status::Delivering, Status::Delivered, Status::Received] {
        given([placed()])
            .when(move_to(to))
            .then_rejected(invalid(Status::Received, to));
    }
}

#[test]
fn preparing_moves_to_delivering_or_is_cancelled() {
    let history = [placed(), Event::OrderPreparationStarted];
    given(history.clone())
        .when(move_to(Status::Delivering))
        .then([Event::OrderOutForDelivery]);
    given(history.clone())
        .when(Command::Cancel)
        .then([cancelled(CancelledBy::Customer)]);
    for to in [Status::Received, Status::Preparing, Status::Delivered] {
        given(history.clone())
            .when(move_to(to))
            .then_rejected(invalid(Status::Preparing, to));
    }
}

#[test]
fn delivering_can_only_be_delivered() {
    let history = [
        placed(),
        Event::OrderPreparationStarted,
        Event::OrderOutForDelivery,
    ];
    given(history.clone())
        .when(move_to(Status::Delivered))
        .then([Event::OrderDelivered]);
    given(history.clone())
        .when(Command::Cancel)
        .then_rejected(invalid(Status::Delivering, Status::Cancelled));
    for to in [
        Status::Received,
        Status::Preparing,
        Status::Delivering,
        Status::Cancelled,
    ] {
        given(history.clone())
            .when(move_to(to))
            .then_rejected(invalid(Status::Delivering, to));
    }
}

#[test]
fn delivered_is_final() {
    let history = [
        placed(),
        Event::OrderPreparationStarted,
        Event::OrderOutForDelivery,
        Event::OrderDelivered,
    ];
    for to in Status::ALL {
        given(history.clone())
            .when(move_to(to))
            .then_rejected(invalid(Status::Delivered, to));
    }
    given(history)
        .when(Command::Cancel)
        .then_rejected(invalid(Status::Delivered, Status::Cancelled));
}

#[test]
fn cancelled_is_final() {
    let history = [placed(), cancelled(CancelledBy::Customer)];
    for to in Status::ALL {
        given(history.clone())
            .when(move_to(to))
            .then_rejected(invalid(Status::Cancelled, to));
    }
    given(history)
        .when(Command::Cancel)
        .then_rejected(invalid(Status::Cancelled, Status::Cancelled));
}

#[test]
fn folding_a_history_gives_its_status_and_version() {
    let state = fold(&[
        placed(),
        Event::OrderPreparationStarted,
        Event::OrderOutForDelivery,
    ]);
    let order = state.order().expect("placed");
    assert_eq!(order.status, Status::Delivering);
    assert_eq!(order.version, 3);
    assert_eq!(order.total_price, Won(15_000));
}
