//! Lingering close. An answer given before the request body was read
//! whole (a refused credential, an unknown key, a body over the limit, a
//! file that is not an OpenPGP message) would otherwise close the
//! connection with unread bytes in it: the kernel then resets it, and a
//! client still sending its upload loses the answer to a broken pipe. A
//! body that may be large is read on, and thrown away, after its reader
//! has gone, for a bounded time (as nginx's `lingering_close`), so the
//! client finishes sending and reads the answer.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderMap, header};
use futures_util::StreamExt;
use http_body::{Frame, SizeHint};

/// A body of at most this many bytes is read by hyper itself, if it
/// already arrived, when its reader goes: it is not wrapped.
const SMALL: u64 = 64 * 1024;
/// How long the rest of a body is read at most…
const LINGER_TIME: Duration = Duration::from_secs(30);
/// …and how long for each next part of it.
const LINGER_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the request announces a body that may be large: a
/// `Content-Length` over 64 KiB (or one that does not parse), or a
/// chunked body.
pub fn may_be_large(headers: &HeaderMap) -> bool {
    match headers.get(header::CONTENT_LENGTH) {
        Some(length) => length.to_str().ok().and_then(|n| n.parse::<u64>().ok()).is_none_or(|n| n > SMALL),
        None => headers.contains_key(header::TRANSFER_ENCODING),
    }
}

/// `body`, read to its end (for a bounded time) once dropped unfinished.
pub fn lingering(body: Body) -> Body {
    Body::new(Lingering { inner: Some(body) })
}

struct Lingering {
    /// `None` once the body ended or failed: nothing is left to read.
    inner: Option<Body>,
}

impl HttpBody for Lingering {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.inner = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(body) = self.inner.take().filter(|body| !body.is_end_stream()) else {
            return;
        };
        // Dropped inside the runtime (a handler, a blocking task of it); a
        // body dropped elsewhere is closed as before.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(body));
        }
    }
}

async fn drain(body: Body) {
    let mut parts = body.into_data_stream();
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while let Ok(Some(Ok(_))) = tokio::time::timeout(LINGER_TIMEOUT, parts.next()).await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(name, value)| (header::HeaderName::from_static(name), value.parse().unwrap())).collect()
    }

    #[test]
    fn only_bodies_that_may_be_large_linger() {
        assert!(!may_be_large(&headers(&[])));
        assert!(!may_be_large(&headers(&[("content-length", "65536")])));
        assert!(may_be_large(&headers(&[("content-length", "65537")])));
        assert!(may_be_large(&headers(&[("content-length", "a lot")])));
        assert!(may_be_large(&headers(&[("transfer-encoding", "chunked")])));
    }
}
