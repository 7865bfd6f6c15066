//! The reviewer over async-openai: bounded retries with backoff on transient failures, a timeout
//! per attempt, structured output where the endpoint has it.

use std::time::Instant;

use async_openai::{
    Client,
    config::OpenAIConfig,
    error::OpenAIError,
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
        Self { client: Client::with_config(openai), config }
    }

    pub async fn review(&self, input: &ReviewInput) -> Result<Review, ReviewError> {
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

/// Rate limits, server errors and network failures are worth another try; the rest is not.
fn classify(error: OpenAIError) -> Failure {
    let transient = match &error {
        OpenAIError::Reqwest(_) | OpenAIError::JSONDeserialize(..) => true,
        OpenAIError::ApiError(api) => {
            matches!(api.status_code.as_u16(), 408 | 409 | 429 | 500..=599)
        }
        _ => false,
    };
    Failure { transient, reason: error.to_string() }
}
