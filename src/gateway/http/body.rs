//! Request bodies at the edge (issue 11 §4, §5): the whole-body deadline
//! (`gateway.body_timeout_seconds`), the gate that keeps a body unread until the request is
//! authenticated, and the cap on bodies read before anyone is authenticated
//! (`gateway.max_unauthenticated_bodies`: the channel webhooks, whose signature covers the body).
//!
//! The edge middleware replaces every request's payload by a [`GuardedPayload`]. It fails
//! with a timeout once the deadline (counted from the complete request head) has passed, and
//! fails closed if a handler reads it before the gate was opened — by `Authorized<…>` after
//! authentication, or by [`SignedBody`] on a route that authenticates the body itself.
//! The middleware then answers 408 / 500 and closes the connection; a body left unread is
//! never drained: the connection closes after the answer.
//! Must not: buffer a body itself, or let any handler read a body before the gate opens.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderMap};
use actix_web::rt::time::{sleep_until, Sleep};
use actix_web::web::Bytes;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::Stream;
use tokio::sync::Semaphore;

use super::error::ApiError;

/// How one request's body went (shared by the middleware and the payload it installed).
pub struct BodyState {
    /// The connection's payload; kept here so that an unread body is still attached when the
    /// answer is written (the connection then closes instead of draining it).
    inner: RefCell<Payload>,
    /// The request announced a body (`Content-Length` > 0 or `Transfer-Encoding`).
    announced: bool,
    gate_open: Cell<bool>,
    finished: Cell<bool>,
    timed_out: Cell<bool>,
    read_before_auth: Cell<bool>,
}

impl BodyState {
    /// Takes over `payload` of a request with `headers`.
    pub fn new(payload: Payload, headers: &HeaderMap) -> Rc<Self> {
        let announced = headers.contains_key(header::TRANSFER_ENCODING)
            || headers
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0");
        Rc::new(Self {
            inner: RefCell::new(payload),
            announced,
            gate_open: Cell::new(false),
            finished: Cell::new(!announced),
            timed_out: Cell::new(false),
            read_before_auth: Cell::new(false),
        })
    }

    /// True when the body ran past its deadline.
    pub fn timed_out(&self) -> bool {
        self.timed_out.get()
    }
    /// True when a handler tried to read the body before the gate opened (a bug: fail closed).
    pub fn read_before_auth(&self) -> bool {
        self.read_before_auth.get()
    }
    /// True when a body was announced and not read to its end.
    pub fn unread(&self) -> bool {
        self.announced && !self.finished.get()
    }
}

/// In a request's extensions: opens its body to handlers.
#[derive(Clone)]
pub struct BodyGate(Rc<BodyState>);

impl BodyGate {
    /// Lets handlers read the body of `req` (no-op without the edge middleware).
    pub fn open(req: &HttpRequest) {
        if let Some(gate) = req.extensions().get::<BodyGate>() {
            gate.0.gate_open.set(true);
        }
    }
}

/// The payload handlers see: the connection's, with the deadline and the gate.
pub struct GuardedPayload {
    state: Rc<BodyState>,
    deadline: Pin<Box<Sleep>>,
}

impl GuardedPayload {
    /// Installs the guard: returns the payload for handlers and the gate for the extensions.
    pub fn install(state: &Rc<BodyState>, deadline: Instant) -> (Payload, BodyGate) {
        let guarded = GuardedPayload {
            state: state.clone(),
            deadline: Box::pin(sleep_until(deadline.into())),
        };
        let stream: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(guarded);
        (Payload::from(stream), BodyGate(state.clone()))
    }
}

fn failure(kind: std::io::ErrorKind, what: &'static str) -> PayloadError {
    PayloadError::Io(std::io::Error::new(kind, what))
}

impl Stream for GuardedPayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let state = self.state.clone();
        if state.finished.get() {
            return Poll::Ready(None);
        }
        if !state.gate_open.get() {
            state.read_before_auth.set(true);
            return Poll::Ready(Some(Err(failure(
                std::io::ErrorKind::PermissionDenied,
                "body read before authentication",
            ))));
        }
        if state.timed_out.get() || self.deadline.as_mut().poll(cx).is_ready() {
            state.timed_out.set(true);
            return Poll::Ready(Some(Err(failure(
                std::io::ErrorKind::TimedOut,
                "request body timeout",
            ))));
        }
        let mut inner = state.inner.borrow_mut();
        match Pin::new(&mut *inner).poll_next(cx) {
            Poll::Ready(None) => {
                state.finished.set(true);
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

/// The slots for bodies read before anyone is authenticated, one set per listener.
#[derive(Clone)]
pub struct BodySlots(pub Arc<Semaphore>);

/// Extractor for a route that authenticates the raw body itself (a webhook signature): opens
/// the gate and reads the body in one of the listener's unauthenticated-body slots; none free
/// → 503 at once (no queueing).
pub struct SignedBody(pub Bytes);

impl FromRequest for SignedBody {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let permit = match req.app_data::<BodySlots>() {
                Some(slots) => Some(slots.0.clone().try_acquire_owned().map_err(|_| {
                    ApiError::Unavailable("too many deliveries; retry later".into())
                })?),
                None => None,
            };
            BodyGate::open(&req);
            let body = Bytes::from_request(&req, &mut payload).await;
            drop(permit);
            body.map(SignedBody)
        })
    }
}
