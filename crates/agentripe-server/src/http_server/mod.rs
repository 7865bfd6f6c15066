//! The HTTP listener: hyper's HTTP/1 with the limits a server open to the internet needs. A client
//! that does not finish its headers in time is cut off, so is a body that stalls or only drips, and so
//! is a client that does not take its response; the number of open connections is capped (a new one
//! waits in the listen backlog until another closes), so slow clients cannot hold the server's sockets
//! and memory. Told to stop, it closes its listener and lets each connection finish the request it is
//! serving.

mod per_client;
mod response_deadline;

pub use self::per_client::client_network;

use std::{convert::Infallible, num::NonZeroUsize, sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo, http::Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
};
use tower::ServiceExt;

use self::{per_client::ClientConnections, response_deadline::ResponseDeadline};

/// How long a connection refused for its client's cap may take to be told so: short, since it holds a
/// place among the connections served meanwhile.
const REFUSAL_PATIENCE: Duration = Duration::from_millis(200);

/// How many headers hyper parses: more than the API serves (100), so that a request with too many gets
/// the API's JSON 431 rather than hyper's empty one.
pub const MAX_HEADERS: usize = 256;

/// How long clients may take, and how many may be connected at once.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// From a connection's start (or its previous response) to the end of a request's headers.
    pub header_timeout: Duration,
    /// Between two chunks of a request body.
    pub body_timeout: Duration,
    /// From the moment a handler starts reading a request's body to its end, however steadily it
    /// arrives: a body sent a byte at a time never stalls for `body_timeout`, and would otherwise hold
    /// its connection (and a stopping server) for as long as its sender likes.
    pub body_deadline: Duration,
    /// From the moment a response has to wait for its client to read to the moment it is all written.
    pub response_deadline: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections one client ([`client_network`]) may hold at once; none behind a reverse proxy, whose
    /// address every client shares. Beyond it, a new connection is answered 429 and closed.
    pub max_connections_per_client: Option<NonZeroUsize>,
}

/// Serves `router` on `listener` until `stop` turns true, then closes the listener, lets every
/// connection finish the request it is serving (an idle one is closed at once), and returns once all
/// are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let router = router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(limits.body_timeout));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let clients = limits.max_connections_per_client.map(ClientConnections::new);
    loop {
        // Waiting for a slot before accepting leaves further clients in the kernel's backlog.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.map_err(std::io::Error::other)?,
            () = stopped(&mut stop) => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut stop) => break,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            // Out of file descriptors, a connection reset before accept: not the listener's end.
            Err(error) => {
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let client = match &clients {
            Some(clients) => match clients.admit(peer.ip()) {
                Some(client) => Some(client),
                None => {
                    tokio::spawn(refuse(socket, slot));
                    continue;
                }
            },
            None => None,
        };
        let (router, mut stop) = (router.clone(), stop.clone());
        tokio::spawn(async move {
            // The peer's address keys the rate limits, as axum's `into_make_service_with_connect_info`.
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.extensions_mut().insert(BodyDeadline(limits.body_deadline));
                let router = router.clone();
                async move {
                    Ok::<_, Infallible>(router.oneshot(request).await.unwrap_or_else(|never| match never {}))
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_headers(MAX_HEADERS)
                .serve_connection(
                    TokioIo::new(ResponseDeadline::new(socket, limits.response_deadline)),
                    service,
                )
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = stopped(&mut stop) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop((client, slot));
        });
    }
    drop(listener);
    // Every connection is closed once it has given its slot back.
    let every_slot = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _closed = slots.acquire_many(every_slot).await.map_err(std::io::Error::other)?;
    Ok(())
}

/// Answers a connection whose client already holds its cap with a JSON 429, then closes it. It keeps its
/// place among the connections served until then, so refusals cannot open more sockets than they may.
async fn refuse(mut socket: TcpStream, slot: OwnedSemaphorePermit) {
    let body = serde_json::json!({
        "error": "too_many_connections",
        "message": "your address holds as many connections to this server as one client may: reuse one, or close one first",
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 429 Too Many Requests\r\ndate: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        httpdate::fmt_http_date(std::time::SystemTime::now()),
        body.len()
    );
    let told = tokio::time::timeout(REFUSAL_PATIENCE, async {
        socket.write_all(answer.as_bytes()).await?;
        socket.shutdown().await?;
        // What the client sent is read, so that closing does not reset the connection before it reads
        // its answer.
        let mut sink = [0u8; 1024];
        while socket.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    });
    if let Ok(Err(error)) = told.await {
        tracing::debug!(%error, "a connection over its client's cap was refused uncleanly");
    }
    drop(slot);
}

/// How long a request's body may take from the moment its reading starts ([`HttpLimits::body_deadline`]),
/// for the body's reader to apply: a deadline that ran from the end of the headers would also count the
/// handler's own work before it reads (a slow chain behind a vendor's signature check), and answer a
/// client that sent its body at once with a timeout.
#[derive(Clone, Copy, Debug)]
pub struct BodyDeadline(pub Duration);

/// Returns once `stop` is true; never, if no one is left to set it.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}
