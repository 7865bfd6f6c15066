//! A fake LLM: an OpenAI-compatible chat-completions server on loopback that plays a script, so the
//! reviewer is exercised over real HTTP.

use std::time::Duration;

/// One scripted answer of the fake LLM.
#[derive(Clone, Debug)]
pub enum LlmAnswer {
    /// A chat completion whose message content is this text.
    Says(String),
    /// An HTTP error with this status.
    Status(u16),
    /// Waits this long, then says the text.
    Slow(std::time::Duration, String),
}

impl LlmAnswer {
    pub fn verdict(approved: bool, reason: &str) -> Self {
        Self::Says(serde_json::json!({ "approved": approved, "reason": reason }).to_string())
    }
}

/// An OpenAI-compatible chat-completions server on loopback that plays a script; past its end it
/// answers 500. It records every request it receives.
#[derive(Debug, Clone)]
pub struct ScriptedLlm {
    pub base_url: String,
    script: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<LlmAnswer>>>,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl ScriptedLlm {
    pub async fn start(script: Vec<LlmAnswer>) -> Self {
        use axum::{Json, extract::State, http::StatusCode, response::IntoResponse, routing::post};
        let llm = Self {
            base_url: String::new(),
            script: std::sync::Arc::new(std::sync::Mutex::new(script.into())),
            requests: std::sync::Arc::default(),
        };
        async fn complete(
            State(llm): State<ScriptedLlm>,
            Json(request): Json<serde_json::Value>,
        ) -> axum::response::Response {
            llm.requests.lock().expect("lock").push(request.clone());
            let answer = llm.script.lock().expect("lock").pop_front();
            let content = match answer {
                None => return (StatusCode::INTERNAL_SERVER_ERROR, "script exhausted").into_response(),
                Some(LlmAnswer::Status(status)) => {
                    let status = StatusCode::from_u16(status).expect("status");
                    let body = serde_json::json!({"error": {"message": "scripted failure", "type": "server_error", "param": null, "code": null}});
                    return (status, Json(body)).into_response();
                }
                Some(LlmAnswer::Says(text)) => text,
                Some(LlmAnswer::Slow(delay, text)) => {
                    tokio::time::sleep(delay).await;
                    text
                }
            };
            Json(serde_json::json!({
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": request["model"],
                "choices": [{ "index": 0, "finish_reason": "stop", "message": { "role": "assistant", "content": content } }],
                "usage": { "prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120 }
            }))
            .into_response()
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base_url = format!("http://{}/v1", listener.local_addr().expect("address"));
        let app = axum::Router::new().route("/v1/chat/completions", post(complete)).with_state(llm.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base_url, ..llm }
    }

    /// Adds answers to the end of the script.
    pub fn push(&self, answers: impl IntoIterator<Item = LlmAnswer>) {
        self.script.lock().expect("lock").extend(answers);
    }

    /// The reviewer settings pointing at this server.
    pub fn reviewer(&self) -> agentripe_review::ReviewerConfig {
        agentripe_review::ReviewerConfig {
            base_url: self.base_url.clone(),
            api_key: "test-key".into(),
            model: "scripted-reviewer".into(),
            timeout: Duration::from_secs(2),
            max_retries: 0,
            backoff: Duration::from_millis(10),
            structured_output: true,
            breaker_threshold: 100,
            breaker_cooldown: Duration::from_secs(1),
        }
    }
}
