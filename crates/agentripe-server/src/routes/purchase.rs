//! `GET|POST /{agentId}/{servicePath}`: an x402-protected purchase. Without a payment: 402 with the
//! requirements (v2 `PAYMENT-REQUIRED` header, v1 JSON body). With one: verify it, then hand it to
//! money in, and answer `{"taskId", "message"}` with the settlement in the payment version's header.

use agentripe_store::Payment;
use agentripe_x402::{ErrorReason, Offer, PaymentPayload, SettleResponse, encode_header, headers, v1, v2};
use alloy::primitives::{B256, U256};
use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{json::JsonBody, payments::follow_path};
use crate::{
    ApiError, AppState,
    money_in::{Claimed, Outcome, Purchase, TaskRequest},
    pipeline::PipelineError,
    util::{hex, now_secs},
};

/// What is for sale at this URL, and the terms of payment.
struct Terms {
    agent_id: U256,
    service_path: String,
    resource: v2::ResourceInfo,
    offer: Offer,
    /// Whether a buyer may ask for a review (a reviewer is configured).
    reviewed_purchases: bool,
}

impl Terms {
    async fn of(state: &AppState, agent_id: &str, service_path: &str) -> Result<Self, ApiError> {
        let id = U256::from_str_radix(agent_id, 10).map_err(|_| {
            ApiError::not_found(format!("agent {agent_id:?} is not registered (agent ids are numbers)"))
        })?;
        let agent = state.catalog.agent(id).await?;
        let entry = agent
            .entry(service_path)
            .ok_or_else(|| ApiError::not_found(format!("agent {id} sells nothing at {service_path:?}")))?;
        let amount = state.config.price(&entry.price).map_err(|error| {
            ApiError::not_found(format!("agent {id}'s catalog entry {service_path:?} is unusable: {error}"))
        })?;
        Ok(Self {
            agent_id: id,
            service_path: service_path.to_owned(),
            resource: v2::ResourceInfo {
                url: state.config.resource_url(&id.to_string(), service_path),
                description: Some(entry.description.clone()),
                mime_type: Some("application/json".into()),
            },
            offer: state.config.offer(amount),
            reviewed_purchases: reviewed_purchases(state),
        })
    }

    /// 402 with the requirements, and whether a reviewer_request can be honoured.
    fn payment_required(&self, error: &str) -> Response {
        let extensions = json!({ "agentripe": { "reviewedPurchases": self.reviewed_purchases } });
        payment_required(&self.offer, &self.resource, error, Some(extensions))
    }

    /// 200 with the task, and the settlement transaction in the header of the payment's version.
    fn paid(&self, payment: &PaymentPayload, task_id: B256, transaction: B256) -> Response {
        let version = payment.version();
        let settled = SettleResponse::settled(
            version,
            self.offer.network,
            payment.exact().authorization.from,
            hex(transaction),
        );
        let mut response = Json(json!({
            "taskId": hex(task_id),
            "message": "Task created. Poll /tasks/:taskId/result for results.",
        }))
        .into_response();
        if let Ok(value) = HeaderValue::from_str(&encode_header(&settled)) {
            response.headers_mut().insert(version.response_header(), value);
        }
        response
    }
}

/// The purchase body: `task_detail`, `task_metadata`, `reviewer_request`; any other field goes to the
/// vendor as `requestPayload`.
#[derive(Debug, Default, Deserialize)]
pub struct PurchaseBody {
    task_detail: Option<String>,
    task_metadata: Option<Map<String, Value>>,
    reviewer_request: Option<String>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

impl From<PurchaseBody> for TaskRequest {
    fn from(body: PurchaseBody) -> Self {
        Self {
            task_detail: body.task_detail,
            task_metadata: body.task_metadata.map(|metadata| Value::Object(metadata).to_string()),
            reviewer_request: body.reviewer_request,
            request_payload: (!body.rest.is_empty()).then(|| Value::Object(body.rest).to_string()),
        }
    }
}

pub async fn purchase(
    State(state): State<AppState>,
    Path((agent_id, service_path)): Path<(String, String)>,
    request_headers: HeaderMap,
    JsonBody(body): JsonBody<PurchaseBody>,
) -> Result<Response, ApiError> {
    let terms = Terms::of(&state, &agent_id, &service_path).await?;
    let request = TaskRequest::from(body);
    // A review that cannot happen would lock the buyer's money until the vendor gives up or it expires:
    // refused before anything is charged.
    if request.reviewer_request.is_some() && !terms.reviewed_purchases {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "review_unavailable",
            "this server has no reviewer, so it cannot honour reviewer_request: buy without one, or elsewhere. Nothing was charged",
        ));
    }
    let payment = match PaymentPayload::from_headers(&request_headers) {
        None => {
            return Ok(terms
                .payment_required("PAYMENT-SIGNATURE (x402 v2) or X-PAYMENT (x402 v1) header is required"));
        }
        Some(Err(reason)) => return Ok(terms.payment_required(&reason.to_string())),
        Some(Ok(payment)) => payment,
    };
    let authorization = &payment.exact().authorization;
    let follow = json!({
        "payer": hex(authorization.from),
        "nonce": hex(authorization.nonce),
        "follow": follow_path(&hex(authorization.from), &hex(authorization.nonce)),
    });
    let in_doubt = |message: String, retry_after| {
        ApiError::unavailable(
            format!("{message}. Follow it at payment.follow, or resend this same request (never a new signature): it is never charged twice"),
            retry_after,
        )
        .with("payment", follow.clone())
    };
    let purchased = match payment.verify(&terms.offer, now_secs()) {
        Ok(verified) => {
            let purchase = Purchase {
                agent_id: terms.agent_id,
                service_path: terms.service_path.clone(),
                offer: terms.offer.clone(),
                resource: terms.resource.clone(),
                payment: payment.clone(),
                verified,
                request,
            };
            state.money_in.purchase(&purchase, state.config.purchase_timeout).await
        }
        // A header this server verified and stored cannot have been signed by another or be not valid
        // yet: for those, there is nothing to look up.
        Err(
            reason @ (ErrorReason::InvalidExactEvmPayloadSignature
            | ErrorReason::InvalidExactEvmPayloadAuthorizationValidAfter),
        ) => return Ok(terms.payment_required(&reason.to_string())),
        // A header resent as a 503 told (its authorization now too close to expiry, say) is answered
        // with what became of its payment: "payment required" would have its buyer sign again.
        Err(reason) => {
            let earlier = state.money_in.earlier_claim(
                &terms.offer,
                &payment,
                terms.agent_id,
                &terms.service_path,
                &request,
            );
            match earlier.await {
                Ok(Some(claimed)) => Ok(claimed),
                Ok(None) => return Ok(terms.payment_required(&reason.to_string())),
                Err(error) => {
                    tracing::error!(%error, "whether a payment was stored before could not be read");
                    return Err(in_doubt(
                        "this payment no longer verifies, and whether it was stored before cannot be read right now"
                            .into(),
                        5,
                    ));
                }
            }
        }
    };
    let advanced = match purchased.map_err(|error| match error {
        PipelineError::Rpc(error) => {
            ApiError::unavailable_because("the chain cannot be read right now; nothing was charged", error, 5)
        }
        PipelineError::Stopping => ApiError::unavailable(
            "this server is stopping and takes no new purchase; nothing was charged: resend this same request",
            1,
        ),
        // The claim's insert may have been lost, or committed with its answer lost: a buyer told only
        // "internal error" might sign again, and pay twice once both settle.
        PipelineError::Store(error) => {
            tracing::error!(%error, "a purchase's payment could not be stored");
            in_doubt("payment received; the database failed while storing it, so it may or may not be stored".into(), 5)
        }
        // A panic while claiming, say: a failure of ours, whose payment may be stored all the same.
        other => {
            tracing::error!(error = %other, "a purchase's payment could not be claimed");
            ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, code: "internal", ..in_doubt("internal error, logged; the payment may have been stored".into(), 5) }
        }
    })? {
        Claimed::Payment(advanced) => advanced,
        Claimed::ForAnotherPurchase(earlier) => return Err(reused(&earlier)),
        Claimed::Refused(reason) => return Ok(terms.payment_required(&reason.to_string())),
    };
    match advanced {
        Ok(Outcome::Recorded { task_id, transaction }) => Ok(terms.paid(&payment, task_id, transaction)),
        Ok(Outcome::Failed(reason)) => Ok(terms.payment_required(&reason.to_string())),
        Ok(Outcome::InProgress { deposit_id: Some(id) }) => {
            Err(in_doubt(format!("payment settled as {}; its deposit is being recorded", hex(id)), 2))
        }
        Ok(Outcome::InProgress { deposit_id: None }) => {
            Err(in_doubt("payment accepted and being settled".into(), 2))
        }
        Err(_) => Err(in_doubt(
            "payment accepted; settlement hit a temporary problem and is being retried".into(),
            5,
        )),
    }
}

/// 402 with the requirements of `offer` for `resource` in both versions' places (v2's `PAYMENT-REQUIRED`
/// header, v1's JSON body), why payment is (still) required, and `extensions` in v2's extensions and
/// beside the v1 body's fields.
pub(super) fn payment_required(
    offer: &Offer,
    resource: &v2::ResourceInfo,
    error: &str,
    extensions: Option<Value>,
) -> Response {
    let description = resource.description.as_deref().unwrap_or_default();
    let v1 = v1::PaymentRequirements::for_offer(offer, &resource.url, description);
    let v2 = v2::PaymentRequired {
        extensions: extensions.clone(),
        ..v2::PaymentRequired::new(resource.clone(), v2::PaymentRequirements::for_offer(offer), error)
    };
    let mut body = serde_json::to_value(v1::PaymentRequired::new(v1, error)).unwrap_or_default();
    if let Some(extensions) = extensions {
        body["extensions"] = extensions;
    }
    let mut response = (StatusCode::PAYMENT_REQUIRED, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&encode_header(&v2)) {
        response.headers_mut().insert(headers::PAYMENT_REQUIRED, value);
    }
    response
}

/// Whether this server can honour a `reviewer_request`.
pub fn reviewed_purchases(state: &AppState) -> bool {
    !matches!(state.verdicts.reviewer(), agentripe_review::Reviewer::Unconfigured)
}

/// 409: the payment already pays for another purchase, which is named.
fn reused(earlier: &Payment) -> ApiError {
    let purchase = format!("agent {}'s {:?}", earlier.new.agent_id, earlier.new.service_path);
    let message = match &earlier.deposit_id {
        Some(task) => format!(
            "this payment authorization already paid for task {task} ({purchase}); sign a new one for this purchase"
        ),
        None => format!(
            "this payment authorization was already presented for {purchase} (or with another body); sign a new one for this purchase"
        ),
    };
    ApiError::new(StatusCode::CONFLICT, "payment_already_used", message)
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, extract::FromRequest, http::Request};

    use super::*;

    async fn parse(body: &str) -> Result<TaskRequest, ApiError> {
        let request = Request::new(Body::from(body.to_owned()));
        JsonBody::<PurchaseBody>::from_request(request, &()).await.map(|JsonBody(body)| body.into())
    }

    #[tokio::test]
    async fn splits_the_known_fields_from_the_payload() {
        let request = parse(r#"{"task_detail":"Translate","task_metadata":{"source_lang":"en"},"reviewer_request":"accurate","text":"hi","n":2}"#)
            .await
            .expect("valid");
        assert_eq!(request.task_detail.as_deref(), Some("Translate"));
        assert_eq!(request.task_metadata.as_deref(), Some(r#"{"source_lang":"en"}"#));
        assert_eq!(request.reviewer_request.as_deref(), Some("accurate"));
        assert_eq!(request.request_payload.as_deref(), Some(r#"{"n":2,"text":"hi"}"#));
        assert_eq!(parse("").await.expect("empty"), TaskRequest::default());
        assert_eq!(parse(r#"{"task_detail":null}"#).await.expect("null"), TaskRequest::default());
    }

    #[tokio::test]
    async fn refuses_malformed_bodies_with_the_reason() {
        for (body, code, names) in [
            ("{", "bad_json", ""),
            ("[1]", "bad_json", ""),
            (r#"{"task_detail":5}"#, "bad_field", "task_detail"),
            (r#"{"task_metadata":"text"}"#, "bad_field", "task_metadata"),
        ] {
            let error = parse(body).await.expect_err(body);
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(error.code, code, "{body}");
            assert!(error.message.contains(names), "{body}: {}", error.message);
        }
    }
}
