//! The server refuses to start where it would charge buyers and then strand their money: an operator
//! key that is not the escrow's, a token domain buyers cannot sign under, a deployment file that is not
//! the escrow's, a deployment on another chain.

use agentripe_server::{
    Config, StartError,
    testing::{Market, key},
};
use agentripe_store::testing::Engine;
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
