//! The reviewer over async-openai. HTTP failures worth another try (429, 5xx, connection errors) are
//! retried by async-openai's own retry layer, with exponential backoff that honours `Retry-After`,
//! at most `max_retries` times; this module retries, as often, a review that timed out or whose answer
//! was not a verdict. Structured output where the endpoint has it.

use std::{sync::Mutex, time::Instant};

use async_openai::{
    Client,
    config::OpenAIConfig,
    error::OpenAIError,
    middleware::{ReqwestService, retry::OpenAIRetryLayer},
    types::chat::{
        ChatCompletionRequestSystemMessageArgs, ChatCompletionRequestUserMessageArgs,
        CreateChatCompletionRequestArgs, ResponseFormat, ResponseFormatJsonSchema,
    },
};

use crate::{Review, ReviewError, ReviewInput, ReviewerConfig, parse_answer, prompt};

/// A reviewer at an OpenAI-compatible endpoint.
#[derive(Debug)]
pub struct OpenAiReviewer {
    client: Client<OpenAIConfig>,
    config: ReviewerConfig,
    breaker: Mutex<Breaker>,
}

/// Consecutive failures, and until when the circuit is open.
#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

/// One failed attempt, and whether another might succeed.
struct Failure {
    transient: bool,
    reason: String,
}

impl OpenAiReviewer {
    pub fn new(config: ReviewerConfig) -> Self {
        let openai =
            OpenAIConfig::new().with_api_base(config.base_url.clone()).with_api_key(config.api_key.clone());
        let http = tower::ServiceBuilder::new()
            .layer(OpenAIRetryLayer::new(config.max_retries as usize))
            .service(ReqwestService::new(reqwest::Client::new()));
        Self {
            client: Client::with_config(openai).with_http_service(http),
            config,
            breaker: Mutex::default(),
        }
    }

    /// Judges a submission, unless the circuit is open.
    pub async fn review(&self, input: &ReviewInput) -> Result<Review, ReviewError> {
        {
            let breaker = self.breaker.lock().expect("breaker lock");
            if let Some(until) = breaker.open_until
                && Instant::now() < until
            {
                return Err(ReviewError::Unavailable(format!(
                    "the reviewer failed {} times in a row; not calling it again for {:?}",
                    breaker.failures,
                    until - Instant::now()
                )));
            }
        }
        let outcome = self.review_with_retries(input).await;
        let mut breaker = self.breaker.lock().expect("breaker lock");
        match &outcome {
            Ok(_) => *breaker = Breaker::default(),
            Err(_) => {
                breaker.failures += 1;
                if breaker.failures >= self.config.breaker_threshold {
                    // Open, or re-open after a failed trial.
                    breaker.open_until = Some(Instant::now() + self.config.breaker_cooldown);
                    tracing::warn!(failures = breaker.failures, "reviewer circuit open");
                }
            }
        }
        outcome
    }

    async fn review_with_retries(&self, input: &ReviewInput) -> Result<Review, ReviewError> {
        let mut backoff = self.config.backoff;
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let failure = match tokio::time::timeout(self.config.timeout, self.ask(input)).await {
                Ok(Ok((approved, reason, total_tokens))) => {
                    return Ok(Review {
                        approved,
                        reason,
                        model: self.config.model.clone(),
                        prompt_version: prompt::PROMPT_VERSION,
                        latency: started.elapsed(),
                        total_tokens,
                    });
                }
                Ok(Err(failure)) => failure,
                Err(_) => {
                    Failure { transient: true, reason: format!("no answer within {:?}", self.config.timeout) }
                }
            };
            tracing::warn!(attempt, reason = %failure.reason, "reviewer attempt failed");
            if !failure.transient || attempt >= self.config.max_retries {
                return Err(ReviewError::Unavailable(failure.reason));
            }
            attempt += 1;
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }

    async fn ask(&self, input: &ReviewInput) -> Result<(bool, String, Option<u32>), Failure> {
        let invalid = |reason: String| Failure { transient: false, reason };
        let system = ChatCompletionRequestSystemMessageArgs::default()
            .content(prompt::system())
            .build()
            .map_err(|error| invalid(error.to_string()))?;
        let user = ChatCompletionRequestUserMessageArgs::default()
            .content(prompt::user(input))
            .build()
            .map_err(|error| invalid(error.to_string()))?;
        let mut request = CreateChatCompletionRequestArgs::default();
        request.model(self.config.model.clone()).messages(vec![system.into(), user.into()]).temperature(0.0);
        if self.config.structured_output {
            request.response_format(ResponseFormat::JsonSchema {
                json_schema: ResponseFormatJsonSchema {
                    description: Some("The review verdict".into()),
                    name: "review_verdict".into(),
                    schema: prompt::verdict_schema(),
                    strict: Some(true),
                },
            });
        }
        let request = request.build().map_err(|error| invalid(error.to_string()))?;
        let response = self.client.chat().create(request).await.map_err(classify)?;
        let text =
            response.choices.first().and_then(|choice| choice.message.content.clone()).unwrap_or_default();
        // A model that answers garbage may answer properly when asked again.
        let (approved, reason) = parse_answer(&text)
            .ok_or_else(|| Failure { transient: true, reason: format!("not a verdict: {:.200}", text) })?;
        Ok((approved, reason, response.usage.map(|usage| usage.total_tokens)))
    }
}

/// HTTP failures reach here after async-openai's retry layer gave up: not worth more tries. A body
/// that is not a chat completion is garbage, which another ask may fix.
fn classify(error: OpenAIError) -> Failure {
    let transient = matches!(error, OpenAIError::JSONDeserialize(..));
    Failure { transient, reason: error.to_string() }
}
