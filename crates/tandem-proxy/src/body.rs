//! Body types of the HTTP path: what is sent upstream (nothing, a buffered copy that can be
//! replayed, or the client's stream) and what is sent back (our own short answer, or the
//! server's stream with the lease on its connection).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use crate::server::InflightGuard;

/// A request body on its way to a server.
pub enum ReqBody {
    Empty,
    /// Buffered, so a retry can send it again.
    Full(Option<Bytes>),
    /// Streamed from the client; can be sent once.
    Stream(Incoming),
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ReqBody::Stream(s) => Pin::new(s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Full(b) => b.is_none(),
            ReqBody::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ReqBody::Stream(s) => s.size_hint(),
        }
    }
}

/// The connection a response is streamed from; returned to the pool when the body ends.
pub(crate) struct Lease {
    pub(crate) guard: InflightGuard,
    pub(crate) sender: Option<SendRequest<ReqBody>>,
    pub(crate) fall: u32,
}

/// A response body on its way to the client.
pub struct RespBody {
    kind: RespKind,
    lease: Option<Lease>,
}

enum RespKind {
    Full(Option<Bytes>),
    Upstream(Incoming),
}

impl RespBody {
    pub(crate) fn full(b: impl Into<Bytes>) -> Self {
        Self {
            kind: RespKind::Full(Some(b.into())),
            lease: None,
        }
    }

    pub(crate) fn empty() -> Self {
        Self {
            kind: RespKind::Full(None),
            lease: None,
        }
    }

    pub(crate) fn upstream(body: Incoming, lease: Lease) -> Self {
        Self {
            kind: RespKind::Upstream(body),
            lease: Some(lease),
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        match &mut this.kind {
            RespKind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RespKind::Upstream(s) => {
                let polled = Pin::new(&mut *s).poll_frame(cx);
                // The answer is complete when the stream ends, or as soon as its last frame is
                // out (hyper stops polling a body that reports its end): the connection can
                // serve the next request.
                let complete = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => s.is_end_stream(),
                    _ => false,
                };
                if complete {
                    if let Some(mut lease) = this.lease.take() {
                        if let Some(sender) = lease.sender.take() {
                            lease.guard.server().checkin(sender);
                        }
                    }
                }
                if let Poll::Ready(Some(Err(e))) = &polled {
                    if let Some(lease) = this.lease.take() {
                        let server: &Arc<_> = lease.guard.server();
                        server.passive_failure(lease.fall, &format!("response body: {e}"));
                    }
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            RespKind::Full(b) => b.is_none(),
            RespKind::Upstream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            RespKind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            RespKind::Upstream(s) => s.size_hint(),
        }
    }
}
