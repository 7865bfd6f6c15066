//! A client of the server under test: purchases, vendor calls and task reads over real HTTP.

use std::{sync::Mutex, time::Duration};

use alloy::{primitives::U256, signers::local::PrivateKeySigner};
use tokio::runtime::Runtime;

use super::{Market, PRICE, now};
use crate::Running;

/// How long a test waits for work the server does on its own (the index, a payment's settlement): long
/// enough for a loaded CI machine, and a wait ends as soon as the work is seen.
const EVENTUALLY: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Server {
    pub running: Running,
    pub base: String,
    pub http: reqwest::Client,
    /// The market's vendor and its agent: who reads tasks in full.
    pub vendor: (PrivateKeySigner, U256),
    /// Runs the server and every task it starts; shut down by [`Self::crash`] or when dropped.
    runtime: Mutex<Option<Runtime>>,
}

impl Server {
    pub(super) fn new(
        running: Running,
        runtime: Runtime,
        base: String,
        vendor: (PrivateKeySigner, U256),
    ) -> Self {
        Self { running, base, http: reqwest::Client::new(), vendor, runtime: Mutex::new(Some(runtime)) }
    }

    /// The address the server listens on, for tests that speak raw TCP to it.
    pub fn address(&self) -> std::net::SocketAddr {
        self.base.trim_start_matches("http://").parse().expect("the server's address")
    }

    /// Stops the server as the death of its process would: every task it started (requests being
    /// handled, payments being advanced, batches being written, its loops) stops where it is, and only
    /// what it stored and sent remains.
    pub fn crash(&self) {
        let runtime = self.runtime.lock().expect("the runtime's lock").take();
        if let Some(runtime) = runtime {
            runtime.shutdown_background();
        }
    }

    /// Buys the translation with `body` as a new funded buyer; returns the buyer and the task id.
    pub async fn purchase(&self, market: &Market, body: &serde_json::Value) -> (PrivateKeySigner, String) {
        let buyer = market.buyer(PRICE).await;
        let response =
            self.buy(market.agent_id, ("PAYMENT-SIGNATURE", &market.pay_v2(&buyer)), &body.to_string()).await;
        assert_eq!(response.status(), 200);
        let json: serde_json::Value = response.json().await.expect("json");
        let task = json["taskId"].as_str().expect("taskId").to_owned();
        (buyer, task)
    }

    /// `POST /vendor/tasks/{task}/{action}` as the market's vendor; returns the status and the body.
    pub async fn vendor(
        &self,
        market: &Market,
        action: &str,
        task: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(format!("{}/vendor/tasks/{task}/{action}", self.base))
            .headers(vendor_headers(&market.vendor, market.agent_id, now()))
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json"))
    }

    /// `GET /tasks/{task}` as the market's vendor, who sees all of it.
    pub async fn task(&self, task: &str) -> serde_json::Value {
        let (vendor, agent_id) = &self.vendor;
        self.http
            .get(format!("{}/tasks/{task}", self.base))
            .headers(vendor_headers(vendor, *agent_id, now()))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    /// Polls the task until its escrow status is `expected` (the reconciler's work), for up to 7.5 s.
    pub async fn escrow_status_eventually(&self, task: &str, expected: &str) -> serde_json::Value {
        for _ in 0..150 {
            let body = self.task(task).await;
            if body["task"]["escrowStatus"] == expected {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("task {task} never reached escrow status {expected}");
    }

    /// Polls `follow` (a payment's `GET /payments/{payer}/{nonce}`) until its status is `expected`, for up
    /// to [`EVENTUALLY`]: the payment's own work, which goes on without the request that started it.
    pub async fn payment_eventually(&self, follow: &str, expected: &str) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + EVENTUALLY;
        loop {
            let payment = self.get_json(follow).await;
            if payment["status"] == expected {
                return payment;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "payment {follow} never reached {expected}: {payment}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET path` (e.g. `/health`), unsigned: the JSON answer, whatever its status.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.http.get(format!("{}{path}", self.base)).send().await.expect("get").json().await.expect("json")
    }

    /// `GET /agents` until it lists `total` agents (the index follows the chain), polling for up to
    /// [`EVENTUALLY`]; the last answer either way.
    pub async fn agents_eventually(&self, total: u64) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + EVENTUALLY;
        loop {
            let listed = self.get_json("/agents").await;
            if listed["total"] == total || tokio::time::Instant::now() >= deadline {
                return listed;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn purchase_url(&self, agent_id: U256) -> String {
        format!("{}/{agent_id}/translate", self.base)
    }

    pub async fn buy(&self, agent_id: U256, header: (&str, &str), body: &str) -> reqwest::Response {
        self.http
            .post(self.purchase_url(agent_id))
            .header(header.0, header.1)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("request")
    }
}

impl Drop for Server {
    /// A runtime cannot be dropped where blocking is not allowed (a test's own runtime).
    fn drop(&mut self) {
        self.crash();
    }
}

/// `GET {path}` signed as `buyer` (X-Buyer-Address); returns the status and the body.
pub async fn get_as_buyer(server: &Server, buyer: &PrivateKeySigner, path: &str) -> (u16, serde_json::Value) {
    let response = server
        .http
        .get(format!("{}{path}", server.base))
        .headers(crate::vendor_auth::buyer_headers(buyer, now()).expect("sign"))
        .send()
        .await
        .expect("get");
    (response.status().as_u16(), response.json().await.expect("json"))
}

/// The four vendor headers, signed by `signer` for `agent_id` at `timestamp`, as Agentripe's guide does.
pub fn vendor_headers(
    signer: &PrivateKeySigner,
    agent_id: U256,
    timestamp: u64,
) -> reqwest::header::HeaderMap {
    crate::vendor_auth::signed_headers(signer, Some(&agent_id.to_string()), timestamp).expect("sign")
}
