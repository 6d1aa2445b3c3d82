//! The pages' live updates: server-sent events.
//!
//! Every process that serves the pages runs one [`Live`] hub ([`super::feed`]). It listens
//! on PostgreSQL's `orders_changed`, `delivery_changed` and `menu_changed`
//! channels, which the live projection batches and the menu commands
//! notify in their own transactions ([`infra::notify`]), so a change
//! committed by any process, through any API process, reaches every hub.
//! A hub reads each named row once, however many pages are open, and hands
//! it to its streams through a broadcast channel; each stream keeps what
//! its caller may see:
//!
//! - `GET /events/orders`: the signed-in caller's own orders (`order`,
//!   an order as `GET /order-ms/…/orders/{id}` shows it) and `menu` when
//!   the menu changed;
//! - `GET /events/board` (staff): every delivery status change of the
//!   stores the caller works at, or of one of them (`?store=`) (`status`,
//!   as `GET /delivery-ms/…` shows it).
//!
//! A stream acts for its caller only while the caller's access lasts: it
//! ends at the token's (or session's) end, when its session signs out (in
//! any process: `notify::SESSIONS`), and when the issuer's keys change and
//! its token no longer passes. Open streams are capped per user and in all
//! (429 / 503 with `Retry-After` past them); the page reconnects, and signs
//! in again if it must.
//!
//! Each stream begins with `ready`, sent after it subscribed: a page loads
//! what it shows then, and no change after that moment is missed. `ready`
//! comes again whenever the stream may have missed something (the hub
//! reconnected to PostgreSQL, or the stream fell behind): the page loads
//! again. A comment every 15 s keeps idle connections open through
//! proxies. `EventSource` cannot send a bearer token: the session cookie
//! authenticates these streams (a bearer token works too, for other
//! clients).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::Stream;

use axum::Extension;

use super::feed::{json_event, Change, Ends, Full, Live, Ticket};
use crate::http::access::{Caller, Proof};
use crate::http::error::ApiError;
use crate::http::extract::QueryPairs;
use crate::http::state::AppState;

fn sse(stream: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    // Proxies must pass each event on at once.
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-cache"),
    );
    response.headers_mut().insert(
        axum::http::HeaderName::from_static("x-accel-buffering"),
        axum::http::HeaderValue::from_static("no"),
    );
    response
}

fn hub(state: &AppState) -> Result<&Live, ApiError> {
    state
        .web
        .as_ref()
        .map(|web| &web.live)
        .ok_or(ApiError::RouteNotFound)
}

/// A place under the caps for `caller`'s stream, and when its access ends:
/// the token's or session's end, the session's sign-out, the issuer's keys
/// withdrawing its token.
fn open(
    state: &AppState,
    live: &Live,
    caller: &Caller,
    proof: Option<Proof>,
) -> Result<(Ends, Ticket), ApiError> {
    let identity = match caller {
        Caller::Signed(identity) => Some(identity),
        Caller::Unchecked => None,
    };
    let user = identity.map(|i| i.user.to_string());
    let ticket = live
        .caps
        .admit(user.as_deref())
        .map_err(|full| match full {
            Full::Caller => ApiError::TooManyStreams,
            Full::Process => ApiError::Overloaded,
        })?;
    let ends = Ends {
        until: identity.map(|i| i.until),
        session: proof.as_ref().and_then(|p| p.session.clone()),
        judge: state.access.auth.clone().zip(proof.map(|p| p.token)),
    };
    Ok((ends, ticket))
}

/// `GET /events/orders`: the caller's own orders as they change.
pub async fn orders(
    State(state): State<AppState>,
    caller: Caller,
    proof: Option<Extension<Proof>>,
) -> Result<Response, ApiError> {
    let live = hub(&state)?;
    let user = match &caller {
        Caller::Signed(identity) => Some(identity.user.to_string()),
        // Without authentication (development) every order is anyone's.
        Caller::Unchecked => None,
    };
    let (ends, ticket) = open(&state, live, &caller, proof.map(|Extension(p)| p))?;
    Ok(sse(live.stream(
        move |change| match change {
            Change::Order(order) if user.as_ref().is_none_or(|u| *u == order.user_id) => {
                json_event("order", order)
            }
            Change::Menu => json_event("menu", &serde_json::json!({})),
            _ => None,
        },
        ends,
        ticket,
    )))
}

/// `GET /events/board`: the delivery status of every order of the caller's
/// stores as it changes (staff), or of one of them (`?store=`).
pub async fn board(
    State(state): State<AppState>,
    caller: Caller,
    proof: Option<Extension<Proof>>,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    caller.staff()?;
    let scope = caller.stores_asked(query.get("store")?)?;
    let live = hub(&state)?;
    let (ends, ticket) = open(&state, live, &caller, proof.map(|Extension(p)| p))?;
    Ok(sse(live.stream(
        move |change| match change {
            Change::Status(status) if scope.includes(&status.store_id) => {
                json_event("status", status)
            }
            _ => None,
        },
        ends,
        ticket,
    )))
}
