//! The quality gate between a vendor's result and the buyer's money: a reviewer over any
//! OpenAI-compatible chat-completions endpoint (OpenAI, a local llama.cpp, Ollama or vLLM server).
//!
//! A reviewer that is down, slow, rate-limited or answers something that is not a verdict gives *no
//! verdict* ([`ReviewError`]): that is never a rejection, and it never moves money.

mod openai;
pub mod prompt;

use std::time::Duration;

pub use openai::OpenAiReviewer;
use serde::{Deserialize, Serialize};

/// What the reviewer judges: the buyer's criteria, the task, and the vendor's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReviewInput {
    pub reviewer_request: String,
    pub task_detail: Option<String>,
    pub task_metadata: Option<String>,
    pub result: String,
}

/// A verdict with what produced it, for the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Review {
    pub approved: bool,
    pub reason: String,
    pub model: String,
    pub prompt_version: &'static str,
    pub latency: Duration,
    pub total_tokens: Option<u32>,
}

/// No verdict.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// No reviewer endpoint is configured: reviewed tasks wait.
    #[error(
        "no reviewer is configured on this server; the task waits for one (it is never approved without review)"
    )]
    Unconfigured,
    /// The endpoint failed, after retries.
    #[error("the reviewer is unavailable: {0}")]
    Unavailable(String),
}

/// Settings of an OpenAI-compatible reviewer.
#[derive(Clone, Debug)]
pub struct ReviewerConfig {
    /// e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    pub api_key: String,
    pub model: String,
    /// Per attempt.
    pub timeout: Duration,
    /// Extra attempts after a transient failure.
    pub max_retries: u32,
    /// First backoff; doubles each retry.
    pub backoff: Duration,
    /// Whether to ask for a JSON-schema answer (structured output); off for endpoints without it.
    pub structured_output: bool,
}

/// The reviewer the server uses.
#[derive(Debug)]
pub enum Reviewer {
    OpenAi(Box<OpenAiReviewer>),
    /// No endpoint configured.
    Unconfigured,
}

impl Reviewer {
    /// Judges a submission.
    pub async fn review(&self, input: &ReviewInput) -> Result<Review, ReviewError> {
        match self {
            Self::OpenAi(reviewer) => reviewer.review(input).await,
            Self::Unconfigured => Err(ReviewError::Unconfigured),
        }
    }
}

/// The answer a model must give.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    approved: bool,
    reason: String,
}

/// Reads a verdict from a model's text: a JSON object, possibly wrapped in a code fence or prose by
/// endpoints without structured output. Anything else is no verdict.
fn parse_answer(text: &str) -> Option<(bool, String)> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    let answer: Answer = serde_json::from_str(text.get(start..=end)?).ok()?;
    let reason = answer.reason.trim();
    (!reason.is_empty()).then(|| (answer.approved, reason.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_defensively() {
        assert_eq!(parse_answer(r#"{"approved":true,"reason":"ok"}"#), Some((true, "ok".into())));
        assert_eq!(
            parse_answer("```json\n{\"approved\": false, \"reason\": \"wrong language\"}\n```"),
            Some((false, "wrong language".into()))
        );
        for garbage in [
            "",
            "approved",
            "{}",
            r#"{"approved":"yes","reason":"x"}"#,
            r#"{"approved":true}"#,
            r#"{"approved":true,"reason":"  "}"#,
            r#"{"approved":true,"reason":"x","extra":1}"#,
        ] {
            assert_eq!(parse_answer(garbage), None, "{garbage:?}");
        }
    }
}
