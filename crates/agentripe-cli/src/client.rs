//! The server's HTTP API, and how answers are shown.

use std::time::Duration;

use agentripe_server::{util::now_secs, vendor_auth::buyer_headers};
use alloy::signers::local::PrivateKeySigner;
use serde_json::Value;

#[derive(Debug)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
    pub json: bool,
}

impl Client {
    pub fn new(base: &str, json: bool) -> Self {
        Self { base: base.trim_end_matches('/').to_owned(), http: reqwest::Client::new(), json }
    }

    /// Reads an answer: the JSON body on success, the server's error message otherwise.
    pub async fn read(response: reqwest::Response) -> Result<(u16, Value), String> {
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status >= 400 && status != 402 {
            let message = body["message"].as_str().unwrap_or("no details");
            return Err(format!("{status} {}: {message}", body["error"].as_str().unwrap_or("error")));
        }
        Ok((status, body))
    }

    pub async fn get(&self, path: &str) -> Result<(u16, Value), String> {
        self.get_signed(path, None).await
    }

    /// `GET` signed as the buyer `key` (X-Buyer-Address), when there is one.
    pub async fn get_signed(
        &self,
        path: &str,
        key: Option<&PrivateKeySigner>,
    ) -> Result<(u16, Value), String> {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.headers(buyer_headers(key, now_secs()).map_err(|e| e.to_string())?);
        }
        let response = request.send().await.map_err(|e| format!("server unreachable: {e}"))?;
        Self::read(response).await
    }

    /// Prints `value` as JSON, or `human` for people.
    pub fn show(&self, value: &Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", human());
        }
    }

    pub async fn agents(&self, query: Option<&str>) -> Result<(), String> {
        let path = match query {
            Some(query) => format!("/agents?limit=100&q={}", query.replace(' ', "%20")),
            None => "/agents?limit=100".into(),
        };
        let (_, body) = self.get(&path).await?;
        self.show(&body, || {
            let mut lines = vec![format!("{} agent(s)", body["total"])];
            for agent in body["agents"].as_array().into_iter().flatten() {
                let data = &agent["data"];
                let offers: Vec<String> = data["services"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|service| service["catalog"].as_array().cloned().unwrap_or_default())
                    .map(|entry| {
                        format!(
                            "{} {}",
                            entry["path"].as_str().unwrap_or("?"),
                            entry["price"].as_str().unwrap_or("?")
                        )
                    })
                    .collect();
                lines.push(format!(
                    "#{:<5} {:<30} {}",
                    agent["agentId"].as_str().unwrap_or("?"),
                    data["name"].as_str().unwrap_or("?"),
                    offers.join(", ")
                ));
            }
            lines.join("\n")
        });
        Ok(())
    }

    pub async fn agent(&self, id: &str) -> Result<(), String> {
        let (_, body) = self.get(&format!("/agents/{id}")).await?;
        let outcomes = &body["tasks"]["outcomes"];
        self.show(&body, || {
            format!(
                "agent #{} {}\n  owner   {}\n  payout  {}\n  tasks   {} released, {} rejected, {} failed, {} expired",
                body["agentId"].as_str().unwrap_or("?"),
                body["data"]["name"].as_str().unwrap_or("?"),
                body["owner"].as_str().unwrap_or("?"),
                body["payoutAddress"].as_str().unwrap_or("?"),
                outcomes["released"],
                outcomes["rejected"],
                outcomes["failed"],
                outcomes["expired"],
            )
        });
        Ok(())
    }

    /// A task, or with `wait` its result once the escrow has moved.
    pub async fn task(
        &self,
        id: &str,
        wait: bool,
        timeout: u64,
        key: Option<&PrivateKeySigner>,
    ) -> Result<(), String> {
        if !wait {
            let (_, body) = self.get_signed(&format!("/tasks/{id}"), key).await?;
            let task = &body["task"];
            self.show(&body, || describe(task));
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let spinner = ['|', '/', '-', '\\'];
        let mut turn = 0;
        loop {
            let (status, body) = self.get_signed(&format!("/tasks/{id}/result"), key).await?;
            if status == 200 {
                if !self.json {
                    eprint!("\r");
                }
                self.show(&body, || {
                    format!(
                        "task {id}\n  status  {}\n  escrow  {}\n  result  {}",
                        body["status"].as_str().unwrap_or("?"),
                        body["escrowAction"].as_str().unwrap_or("?"),
                        body["result"].as_str().or(body["errorMessage"].as_str()).unwrap_or("-"),
                    )
                });
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("task {id} still open after {timeout} s (status {})", body["status"]));
            }
            if !self.json {
                eprint!(
                    "\r{} waiting for task {id}: {}   ",
                    spinner[turn % 4],
                    body["status"].as_str().unwrap_or("?")
                );
                turn += 1;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// A task for people.
pub fn describe(task: &Value) -> String {
    format!(
        "task {}\n  agent {}  product {}  status {}  escrow {}\n  detail  {}\n  result  {}",
        task["id"].as_str().unwrap_or("?"),
        task["agentId"].as_str().unwrap_or("?"),
        task["productId"].as_str().unwrap_or("?"),
        task["status"].as_str().unwrap_or("?"),
        task["escrowStatus"].as_str().unwrap_or("?"),
        task["taskDetail"].as_str().unwrap_or("-"),
        task["result"].as_str().unwrap_or("-"),
    )
}
