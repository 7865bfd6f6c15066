//! What strangers send (issue 14): every rejection is the API's JSON error, internal detail never
//! reaches a caller, and signatures are low-s everywhere.

use agentripe_server::testing::{Market, now, vendor_headers};
use agentripe_store::testing::Engine;
use alloy::primitives::{Signature, U256};
use serde_json::Value;

/// Sends a request and returns its status and its body, which must be `{"error", "message"}` JSON.
async fn rejected(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status} is not JSON: {text:?}"));
    assert!(body["error"].is_string() && body["message"].is_string(), "{status}: {body}");
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_is_a_json_error() {
    let market = Market::new(Engine::Sqlite, "hostile_input").await.expect("SQLite needs no set-up");
    let server = market.start().await;
    let http = &server.http;
    let url = |path: &str| format!("{}{path}", server.base);
    let signed =
        |path: &str| http.get(url(path)).headers(vendor_headers(&market.vendor, market.agent_id, now()));
    let purchase = format!("/{}/translate", market.agent_id);
    let cases: Vec<(u16, reqwest::RequestBuilder)> = vec![
        (405, http.put(url(&purchase))),
        (405, http.delete(url(&purchase))),
        (405, http.patch(url("/vendor/tasks"))),
        (400, http.get(url("/agents?limit=abc"))),
        (400, http.get(url("/agents?offset=1180591620717411303424"))),
        (400, http.get(url("/discovery/resources?limit=abc"))),
        (400, signed("/vendor/tasks?limit=1180591620717411303424")),
        (404, http.get(url("/nowhere"))),
        (414, http.get(url(&format!("/agents?q={}", "a".repeat(10_000))))),
        (431, {
            let mut request = http.get(url("/health"));
            for i in 0..150 {
                request = request.header(format!("x-filler-{i}"), "1");
            }
            request
        }),
        (431, http.get(url("/health")).header("x-large", "a".repeat(40_000))),
    ];
    for (expected, request) in cases {
        let (status, body) = rejected(request).await;
        assert_eq!(status, expected, "{body}");
    }
    // A payment named by what cannot be a payer or a nonce: the answer says which.
    let zeros = "00".repeat(32);
    for (path, named) in [
        (format!("/payments/0x%00/0x{zeros}"), "the payer must be"),
        (format!("/payments/{:#x}/1180591620717411303424", market.vendor.address()), "the nonce must be"),
    ] {
        let (status, body) = rejected(http.get(url(&path))).await;
        assert_eq!(status, 404, "{body}");
        assert!(body["message"].as_str().is_some_and(|m| m.contains(named)), "{path}: {body}");
    }
    // A path that is not UTF-8.
    let (status, _) = rejected(http.get(url("/tasks/%FF%FE"))).await;
    assert!(status == 400 || status == 404, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_high_s_twin_of_a_vendor_signature_is_refused() {
    let market = Market::new(Engine::Sqlite, "high_s_vendor").await.expect("SQLite needs no set-up");
    let server = market.start().await;
    let mut headers = vendor_headers(&market.vendor, market.agent_id, now());
    let signature: Signature = headers["x-signature"].to_str().expect("ascii").parse().expect("signature");
    let n = U256::from_str_radix("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141", 16)
        .expect("n");
    let twin = Signature::new(signature.r(), n - signature.s(), !signature.v());
    headers.insert(
        "x-signature",
        format!("0x{}", alloy::primitives::hex::encode(twin.as_bytes())).parse().expect("header"),
    );
    let (status, body) =
        rejected(server.http.get(format!("{}/vendor/tasks", server.base)).headers(headers)).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("high s")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_catalog_is_not_a_port_scanner() {
    // An agent whose registration file is on a closed local port: the caller learns it is unavailable,
    // not the connection error (which would map internal networks for a stranger).
    let market = Market::new(Engine::Sqlite, "catalog_scanner").await.expect("SQLite needs no set-up");
    let server = market.start().await;
    let agent = market.register_agent("http://127.0.0.1:9/secret-internal-path").await;
    let (status, body) = rejected(server.http.get(format!("{}/agents/{agent}", server.base))).await;
    assert_eq!(status, 503, "{body}");
    let text = body.to_string();
    for detail in ["127.0.0.1", "secret-internal-path", "refused", "error sending"] {
        assert!(!text.contains(detail), "{detail} leaked: {text}");
    }
}

/// A loopback HTTP server that counts its requests; `/slow` answers a good catalog after a second,
/// `/huge` streams without end, anything else answers the catalog at once.
async fn catalog_host() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use axum::{body::Body, routing::get};
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                agentripe_server::testing::CATALOG
            }),
        )
        .route(
            "/huge",
            get(|| async {
                let chunk = bytes_of_zeros();
                Body::from_stream(futures_stream(chunk))
            }),
        )
        .fallback(get(|| async { agentripe_server::testing::CATALOG }))
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move { next.run(request).await }
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, hits)
}

fn bytes_of_zeros() -> axum::body::Bytes {
    axum::body::Bytes::from(vec![b' '; 64 * 1024])
}

/// An endless stream of `chunk`s.
fn futures_stream(
    chunk: axum::body::Bytes,
) -> impl futures_util::Stream<Item = Result<axum::body::Bytes, std::io::Error>> {
    futures_util::stream::repeat_with(move || Ok(chunk.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_files_on_private_addresses_are_never_fetched() {
    let market = Market::new(Engine::Sqlite, "catalog_ssrf").await.expect("SQLite needs no set-up");
    let mut config = market.config();
    config.catalog_allow_private = false;
    // The agent index runs once, at start-up: only requests fetch catalogs here.
    config.reconcile_interval = std::time::Duration::from_secs(3600);
    let server = market.start_with(config).await;
    let (base, hits) = catalog_host().await;
    let port = base.rsplit(':').next().expect("port");
    for uri in [
        format!("{base}/agent.json"),
        format!("http://localhost:{port}/agent.json"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://[::1]:{port}/agent.json"),
    ] {
        let agent = market.register_agent(&uri).await;
        let response = server.http.get(format!("{}/agents/{agent}", server.base)).send().await.expect("get");
        assert_ne!(response.status(), 200, "{uri} was read");
        let purchase =
            server.http.get(format!("{}/{agent}/translate", server.base)).send().await.expect("get");
        assert_ne!(purchase.status(), 402, "{uri} was sold");
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0, "no request reached the private host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_is_fetched_once_however_many_ask_and_never_read_past_its_cap() {
    let market = Market::new(Engine::Sqlite, "catalog_coalesce").await.expect("SQLite needs no set-up");
    let mut config = market.config();
    // The agent index runs once, at start-up: only requests fetch catalogs here.
    config.reconcile_interval = std::time::Duration::from_secs(3600);
    let server = std::sync::Arc::new(market.start_with(config).await);
    let (base, hits) = catalog_host().await;
    let slow = market.register_agent(&format!("{base}/slow")).await;
    let readers: Vec<_> = (0..20)
        .map(|_| {
            let server = server.clone();
            tokio::spawn(async move {
                server.http.get(format!("{}/agents/{slow}", server.base)).send().await.expect("get").status()
            })
        })
        .collect();
    for reader in readers {
        assert_eq!(reader.await.expect("join"), 200);
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1, "twenty readers, one fetch");

    // An endless body is cut at the cap, and the failure is cached: asked again, not fetched again.
    let huge = market.register_agent(&format!("{base}/huge")).await;
    for _ in 0..3 {
        let (status, body) = rejected(server.http.get(format!("{}/agents/{huge}", server.base))).await;
        assert_eq!(status, 404, "{body}");
        assert!(body["message"].as_str().is_some_and(|m| m.contains("larger than")), "{body}");
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2, "the huge catalog was fetched once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_is_cut_off_before_any_work() {
    use std::num::NonZeroU32;

    let market = Market::new(Engine::Sqlite, "rate_limit").await.expect("SQLite needs no set-up");
    let mut config = market.config();
    config.rate_limit = Some(agentripe_server::RateLimit {
        // One request back a minute: nothing refills while the test runs.
        refill: std::time::Duration::from_secs(60),
        burst: NonZeroU32::new(5).expect("non-zero"),
        trust_forwarded_for: false,
    });
    let server = market.start_with(config).await;

    // Unpaid purchase attempts: the first five are answered (402), the rest refused before the handler.
    let purchase = format!("{}/{}/translate", server.base, market.agent_id);
    let mut statuses = Vec::new();
    let mut refusal = None;
    for _ in 0..12 {
        let response = server.http.get(&purchase).send().await.expect("send");
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            refusal = Some((retry_after, response.json::<Value>().await.expect("a JSON error")));
        }
    }
    assert_eq!(statuses.iter().filter(|&&status| status == 402).count(), 5, "{statuses:?}");
    assert!(statuses[5..].iter().all(|&status| status == 429), "{statuses:?}");
    let (retry_after, body) = refusal.expect("refused");
    assert!(retry_after.is_some_and(|seconds| seconds.parse::<u64>().is_ok_and(|s| s >= 1)));
    assert_eq!(body["error"], "rate_limited", "{body}");
    // Forged forwarding headers do not buy a fresh bucket: the peer address is the key.
    let forged =
        server.http.get(&purchase).header("x-forwarded-for", "203.0.113.7").send().await.expect("send");
    assert_eq!(forged.status(), 429);
}

/// Reads what the server sends on `socket` until it closes the connection, for at most `within`;
/// None if it is still open then.
async fn until_closed(
    socket: &mut (impl tokio::io::AsyncRead + Unpin),
    within: std::time::Duration,
) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buffer = [0u8; 4096];
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| String::from_utf8_lossy(&received).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_cannot_hold_every_connection() {
    use std::time::Duration;
    use tokio::{io::AsyncWriteExt, net::TcpStream};

    let market = Market::new(Engine::Sqlite, "slow_clients").await.expect("SQLite needs no set-up");
    let mut config = market.config();
    // Long enough that the idle connections below still hold their slots when the third client asks,
    // even on a busy machine.
    config.http.header_timeout = Duration::from_secs(3);
    config.http.body_timeout = Duration::from_secs(1);
    config.http.max_connections = 2;
    let server = market.start_with(config).await;
    let address = server.address();

    // Headers that never end: the connection is closed.
    let mut slow_headers = TcpStream::connect(&address).await.expect("connect");
    slow_headers.write_all(b"GET /health HTTP/1.1\r\nHost: market\r\n").await.expect("write");
    assert!(until_closed(&mut slow_headers, Duration::from_secs(8)).await.is_some(), "held open");

    // A body that stops half-way: a JSON error, then the connection is closed.
    let mut slow_body = TcpStream::connect(&address).await.expect("connect");
    let head = "POST /agents/register HTTP/1.1\r\nHost: market\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"data\":";
    slow_body.write_all(head.as_bytes()).await.expect("write");
    let answer = until_closed(&mut slow_body, Duration::from_secs(5)).await.expect("closed");
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");

    // Two idle connections take every slot: a third client waits until the server cuts them off.
    let idle: Vec<TcpStream> = vec![
        TcpStream::connect(&address).await.expect("connect"),
        TcpStream::connect(&address).await.expect("connect"),
    ];
    no_place_until_cut_off(&server, "the idle connections").await;
    drop(idle);
}

/// Checks that `holder` holds every place of `server` (a request gets no answer within half a second)
/// until the server cuts it off (one is answered within 15 s).
async fn no_place_until_cut_off(server: &agentripe_server::testing::Server, holder: &str) {
    let quick =
        reqwest::Client::builder().timeout(std::time::Duration::from_millis(500)).build().expect("client");
    let health = format!("{}/health", server.base);
    assert!(quick.get(&health).send().await.is_err(), "no place while {holder} hold it");
    let mut served = false;
    for _ in 0..30 {
        if quick.get(&health).send().await.is_ok_and(|response| response.status() == 200) {
            served = true;
            break;
        }
    }
    assert!(served, "served once {holder} were cut off");
}

/// The status code of a raw HTTP/1 answer.
fn status_of(answer: &str) -> u16 {
    answer.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("{answer:?}"))
}

/// A body sent a byte at a time never stalls for the body timeout, so without a deadline for the whole
/// body its sender would hold the connection (and a stopping server) for as long as it liked: here, 200
/// seconds for 1,000 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_only_drips_is_cut_off_at_its_deadline() {
    use std::time::{Duration, Instant};
    use tokio::{io::AsyncWriteExt, net::TcpStream};

    let market = Market::new(Engine::Sqlite, "dripping_body").await.expect("SQLite needs no set-up");
    let mut config = market.config();
    config.http.body_timeout = Duration::from_secs(2);
    config.http.body_deadline = Duration::from_secs(3);
    let server = market.start_with(config).await;
    let address = server.address();

    let socket = TcpStream::connect(&address).await.expect("connect");
    let (mut from_server, mut to_server) = socket.into_split();
    let head = "POST /agents/register HTTP/1.1\r\nHost: market\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"data\":";
    let sent = Instant::now();
    to_server.write_all(head.as_bytes()).await.expect("write");
    let drip = tokio::spawn(async move {
        while to_server.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    let answer =
        until_closed(&mut from_server, Duration::from_secs(15)).await.expect("cut off at the deadline");
    assert!(sent.elapsed() >= Duration::from_secs(3), "cut off before its deadline: {answer}");
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    drip.abort();
}

/// A client that asks for responses and never reads them fills the sockets' buffers, and the server's
/// writes wait on it: without a deadline on taking a response it would hold its connection (here the
/// only one) for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_take_its_responses_is_cut_off() {
    use std::time::Duration;
    use tokio::{io::AsyncWriteExt, net::TcpSocket};

    let market = Market::new(Engine::Sqlite, "unread_responses").await.expect("SQLite needs no set-up");
    let mut config = market.config();
    config.rate_limit = None;
    config.http.max_connections = 1;
    config.http.response_deadline = Duration::from_secs(2);
    let server = market.start_with(config).await;
    let address = server.address();

    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("a small receive buffer");
    let (_never_read, mut to_server) = socket.connect(address).await.expect("connect").into_split();
    // 400 requests for the API's document (53 KB each) in one go: far more than the sockets' buffers
    // hold (4 MB at most here).
    let asking = tokio::spawn(async move {
        let requests = "GET /openapi.json HTTP/1.1\r\nHost: market\r\n\r\n".repeat(400);
        let _ = to_server.write_all(requests.as_bytes()).await;
        to_server
    });

    no_place_until_cut_off(&server, "the connections of a client that does not read").await;
    asking.abort();
}

/// One address cannot take every connection (a request every few seconds keeps one open, a 429 being an
/// answer too): beyond its cap, a new connection is told so in JSON and closed, while a client from
/// another address is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_every_connection() {
    use std::time::Duration;
    use tokio::{
        io::AsyncWriteExt,
        net::{TcpSocket, TcpStream},
    };

    let market = Market::new(Engine::Sqlite, "connections_per_client").await.expect("SQLite needs no set-up");
    let mut config = market.config();
    config.http.max_connections = 4;
    config.http.max_connections_per_client = std::num::NonZeroUsize::new(2);
    let server = market.start_with(config).await;
    let address = server.address();

    let _held = [
        TcpStream::connect(address).await.expect("connect"),
        TcpStream::connect(address).await.expect("connect"),
    ];
    let mut third = TcpStream::connect(address).await.expect("connect");
    let answer = until_closed(&mut third, Duration::from_secs(5)).await.expect("refused at once");
    assert_eq!(status_of(&answer), 429, "{answer}");
    assert!(answer.contains("\"too_many_connections\""), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("\r\ndate: "), "a Date, as every origin answer: {answer}");

    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.2:0".parse().expect("address")).expect("bind another loopback address");
    let mut other = socket.connect(address).await.expect("connect");
    other
        .write_all(b"GET /health HTTP/1.1\r\nHost: market\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let answer = until_closed(&mut other, Duration::from_secs(5)).await.expect("answered");
    assert_eq!(status_of(&answer), 200, "{answer}");
}
