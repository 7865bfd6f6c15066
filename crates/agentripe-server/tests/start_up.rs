//! The server refuses to start where it would charge buyers and then strand their money: an operator
//! key that is not the escrow's, a token domain buyers cannot sign under, a deployment file that is not
//! the escrow's, a deployment on another chain. Told to stop, it finishes the purchases in flight first.

use agentripe_server::{
    Config, StartError,
    testing::{Market, PRICE, Server, key},
};
use agentripe_store::testing::Engine;
use agentripe_x402::decode_header;
use std::time::Duration;

async fn start(config: Config) -> Result<agentripe_server::Running, StartError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    agentripe_server::start(config, listener).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_to_start_where_it_would_strand_money() {
    let market = Market::new(Engine::Sqlite, "start_up").await.expect("SQLite needs no set-up");

    let mut wrong_key = market.config();
    wrong_key.operator_key = key(&market.anvil, 5);
    let error = start(wrong_key).await.expect_err("not the escrow's operator");
    assert!(matches!(error, StartError::WrongOperator { .. }), "{error}");
    let message = error.to_string();
    for address in [market.operator.address(), key(&market.anvil, 5).address()] {
        assert!(message.contains(&address.to_string()), "names both keys: {message}");
    }

    // Base mainnet USDC's domain name is "USD Coin": configured against a token named "USDC", refused.
    let mut wrong_domain = market.config();
    wrong_domain.token_name = "USD Coin".into();
    let error = start(wrong_domain).await.expect_err("buyers would sign under the wrong domain");
    assert!(matches!(error, StartError::TokenDomain { .. }), "{error}");

    // A deployment file that is not this escrow's would give every task the wrong expiry.
    let mut wrong_timeout = market.config();
    wrong_timeout.deployment.deposit_timeout_seconds += 1;
    let error = start(wrong_timeout).await.expect_err("tasks would expire at the wrong time");
    assert!(matches!(error, StartError::WrongDepositTimeout { .. }), "{error}");

    let mut other_chain = market.config();
    other_chain.deployment.chain_id = 84532;
    let error = start(other_chain).await.expect_err("the RPC serves another chain");
    assert!(matches!(error, StartError::WrongChain { expected: 84532, .. }), "{error}");

    start(market.config()).await.expect("the right contracts and key start").abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_answers_is_given_up_on() {
    let market = Market::new(Engine::Sqlite, "start_up_silent_node").await.expect("SQLite needs no set-up");
    // It takes every connection and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let mut config = market.config();
    config.rpc_url = format!("http://{}", silent.local_addr().expect("address"));
    config.rpc_timeout = Duration::from_secs(1);
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            held.push(connection);
        }
    });
    let started = tokio::time::timeout(Duration::from_secs(20), start(config))
        .await
        .expect("the server gave up on the node instead of waiting forever");
    let error = started.expect_err("no chain answered");
    assert!(matches!(error, StartError::Chain(_)), "{error}");
    holding.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_the_operators_eth_and_whether_it_is_low() {
    let market = Market::new(Engine::Sqlite, "operator_funds").await.expect("SQLite needs no set-up");
    let health = async |server: &agentripe_server::testing::Server| -> serde_json::Value {
        let response = server.http.get(format!("{}/health", server.base)).send().await.expect("health");
        response.json().await.expect("json")
    };
    let funded = market.start().await;
    let operator = health(&funded).await["operator"].clone();
    assert_eq!(operator["address"], market.operator.address().to_checksum(None));
    assert_eq!(operator["low"], false, "{operator}");
    let balance: alloy::primitives::U256 =
        operator["balanceWei"].as_str().expect("a balance").parse().expect("wei");
    assert!(balance > alloy::primitives::U256::ZERO);

    // A minimum above what it holds: reported low (and warned of in the log).
    let mut config = market.config();
    config.operator_min_balance = balance + alloy::primitives::U256::from(1);
    let short = market.start_with(config).await;
    assert_eq!(health(&short).await["operator"]["low"], true);
}

/// A restart does not cut purchases off: stopping closes the listener at once, answers the purchase in
/// flight before it returns, and finishes the one whose buyer hung up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_answers_and_finishes_the_purchases_in_flight() {
    let market = Market::new(Engine::Sqlite, "stopping").await.expect("SQLite needs no set-up");

    // A buyer waits for its answer while its settlement waits in the node's pool.
    let mut server = market.start().await;
    let header = market.pay_v2(&market.buyer(PRICE).await);
    market.hold_blocks().await;
    let answer = purchase_in_pool(&market, &server, &header).await;
    let address = server.address();
    let (finished, ()) = tokio::join!(server.running.stop(Duration::from_secs(60)), async {
        let mut refused = false;
        for _ in 0..250 {
            refused = tokio::net::TcpStream::connect(&address).await.is_err();
            if refused {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "a stopping server takes no new connection");
        market.resume_mining().await;
    });
    assert!(finished, "everything in flight finished within the patience");
    let response = answer.await.expect("join").expect("the purchase in flight is answered");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["taskId"].as_str().map(str::parse), Some(Ok(market.settlement_of(&header).await)));

    // Another buyer hangs up while its settlement waits: stopping waits for its purchase all the same.
    let mut server = market.start().await;
    let header = market.pay_v2(&market.buyer(PRICE).await);
    market.hold_blocks().await;
    purchase_in_pool(&market, &server, &header).await.abort();
    // Time for the server to read the hang-up and drop the request, so that only the purchase's own task
    // is left to wait for (were the request still there, stopping would wait for it instead).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = async {
        let finished = server.running.stop(Duration::from_secs(60)).await;
        (finished, market.deposit(market.settlement_of(&header).await).await.status)
    };
    let resuming = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        market.resume_mining().await;
    };
    let ((finished, status), ()) = tokio::join!(stopping, resuming);
    assert!(finished, "everything in flight finished within the patience");
    assert_eq!(status, 1, "recorded before stopping returned");
}

/// A purchase that asks for its place once stopping has begun is refused before anything is stored, and
/// is told so truthfully: nothing charged, and the same header pays after the restart. PostgreSQL only: a
/// table lock holds the purchase's first read until the stop has begun.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_that_comes_while_stopping_is_refused_uncharged_and_pays_after_the_restart() {
    use agentripe_store::testing::TableLock;
    use alloy::primitives::U256;
    let Some(market) = Market::new(Engine::Postgres, "purchase_while_stopping").await else {
        return;
    };
    let mut server = market.start().await;
    let buyer = market.buyer(PRICE).await;
    let header = market.pay_v2(&buyer);

    let mut lock = TableLock::everything(&market.database_url, "payments").await;
    let request = server.http.post(server.purchase_url(market.agent_id)).header("PAYMENT-SIGNATURE", &header);
    let answer = tokio::spawn(request.send());
    while !lock.blocks("SELECT 'known'").await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // `join!` polls the stop first, and its first poll closes the places: the read is let go after that.
    let (finished, ()) = tokio::join!(server.running.stop(Duration::from_secs(60)), lock.release());
    assert!(finished, "the refused request was answered within the patience");
    let response = answer.await.expect("join").expect("answered");
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.expect("json");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("stopping") && message.contains("nothing was charged"), "{body}");
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE), "nothing was charged");

    let payment: agentripe_x402::v2::PaymentPayload = decode_header(&header).expect("decodes");
    let authorization = &payment.payload.authorization;
    let store = agentripe_store::Store::connect(&market.database_url).await.expect("store");
    let stored = store
        .payment_by_authorization(
            i64::try_from(market.deployment.chain_id).expect("chain id"),
            &format!("{:#x}", market.deployment.usdc),
            &format!("{:#x}", authorization.from),
            &format!("{:#x}", authorization.nonce),
        )
        .await
        .expect("read");
    assert!(stored.is_none(), "nothing stored: {stored:?}");

    // After the restart the same header pays.
    let server = market.start().await;
    let paid = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
    assert_eq!(paid.status(), 200, "{:?}", paid.text().await);
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::ZERO, "charged once");
}

/// Sends a purchase with `header` while blocks are held; returns once its settlement is in the pool.
async fn purchase_in_pool(
    market: &Market,
    server: &Server,
    header: &str,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    use alloy::providers::Provider;
    let request = server.http.post(server.purchase_url(market.agent_id)).header("PAYMENT-SIGNATURE", header);
    let sent = tokio::spawn(request.send());
    for _ in 0..300 {
        let pool: serde_json::Value =
            market.provider.raw_request("txpool_status".into(), ()).await.expect("pool");
        if pool["pending"] == "0x1" {
            return sent;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the purchase's settlement never reached the pool");
}
