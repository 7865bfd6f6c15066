//! A connection whose client must take its responses. hyper has no write timeout: a client that reads
//! its responses a byte at a time, or not at all, would hold its connection (and its place among the
//! connections served at once) for as long as it liked.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

/// The slowest pace at which a client that has been waited for may go on taking a response: a slow
/// link's (16 KiB/s), so that a large response on one is not cut off, while a client that reads a byte
/// now and then is.
const MIN_READ_RATE: u64 = 16 * 1024;

/// `io`, on which a client that has had to be waited for must take what hyper writes: once a write
/// first waits, everything hyper has to write must reach the socket by `limit` after that moment, plus
/// the time the bytes written since take at [`MIN_READ_RATE`]. The clock stops at hyper's next flush,
/// which it makes once its whole response is written.
pub struct ResponseDeadline<S> {
    io: S,
    limit: Duration,
    waited: Option<Waited>,
}

/// Since a write first had to wait for the client.
struct Waited {
    since: Instant,
    written: u64,
    timer: Pin<Box<Sleep>>,
}

impl<S> ResponseDeadline<S> {
    pub fn new(io: S, limit: Duration) -> Self {
        Self { io, limit, waited: None }
    }

    /// A write waits for the client: from now on if it is the first since the last flush. Ready with
    /// the error to fail the connection with once the deadline has passed.
    fn waiting(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let limit = self.limit;
        let waited = self.waited.get_or_insert_with(|| {
            let since = Instant::now();
            Waited { since, written: 0, timer: Box::pin(tokio::time::sleep_until(since + limit)) }
        });
        let deadline = waited.since + limit + Duration::from_millis(waited.written * 1000 / MIN_READ_RATE);
        if waited.timer.deadline() != deadline {
            waited.timer.as_mut().reset(deadline);
        }
        waited
            .timer
            .as_mut()
            .poll(cx)
            .map(|()| io::Error::new(io::ErrorKind::TimedOut, "the client did not take its response in time"))
    }

    fn wrote(&mut self, polled: Poll<io::Result<usize>>, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(written)) => {
                if let Some(waited) = &mut self.waited {
                    waited.written += written as u64;
                }
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => self.waiting(cx).map(Err),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ResponseDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ResponseDeadline<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(polled, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    /// hyper flushes once everything it had to write is written: the response was taken in time.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(flushed) => {
                self.waited = None;
                Poll::Ready(flushed)
            }
            Poll::Pending => self.waiting(cx).map(Err),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.io).poll_shutdown(cx) {
            Poll::Ready(shut) => Poll::Ready(shut),
            Poll::Pending => self.waiting(cx).map(Err),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A client that takes a response at a slow link's pace keeps its connection past the limit (here
    /// 1.5 s of reading against 1 s); once it stops reading, it is cut off.
    #[tokio::test]
    async fn a_client_is_given_the_time_what_it_takes_needs() {
        let (server, mut client) = tokio::io::duplex(1024);
        let mut server = ResponseDeadline::new(server, Duration::from_secs(1));
        let reading = tokio::spawn(async move {
            let mut taken = [0u8; 1024];
            // 50 KiB/s, three times the slowest pace allowed.
            for _ in 0..75 {
                client.read_exact(&mut taken).await.expect("still connected while reading");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            client
        });
        let response = vec![7u8; 256 * 1024];
        let written = tokio::time::timeout(Duration::from_secs(20), server.write_all(&response)).await;
        let error = written.expect("cut off in time").expect_err("cut off once the client stopped reading");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        drop(server);
        reading.await.expect("the client read all it asked for before it stopped");
    }
}
