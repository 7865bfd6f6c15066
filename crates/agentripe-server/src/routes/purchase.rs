//! `GET|POST /{agentId}/{servicePath}`: an x402-protected purchase. Without a payment: 402 with the
//! requirements (v2 `PAYMENT-REQUIRED` header, v1 JSON body). With one: verify, claim, settle into
//! the escrow, record the deposit, create the task, answer `{"taskId", "message"}`.

use std::sync::Arc;

use agentripe_store::NewPayment;
use agentripe_x402::{
    ErrorReason, Offer, PaymentPayload, SettleResponse, encode_header, headers, v1,
    v2::{self, ResourceInfo},
};
use alloy::primitives::{Address, U256};
use axum::{
    Json,
    body::Bytes,
    extract::{Path, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

use crate::{
    ApiError, AppState,
    catalog::{CatalogError, parse_price},
    chain_writer::hex,
    now_secs,
    payments::{Outcome, StoredPayment, TaskRequest},
};

/// What is for sale at this URL, and the terms of payment.
struct Terms {
    agent_id: U256,
    service_path: String,
    description: String,
    resource: String,
    offer: Offer,
}

impl Terms {
    fn v1_requirements(&self) -> v1::PaymentRequirements {
        v1::PaymentRequirements::for_offer(&self.offer, &self.resource, &self.description)
    }

    fn v2_requirements(&self) -> v2::PaymentRequirements {
        v2::PaymentRequirements::for_offer(&self.offer)
    }

    /// 402 with the requirements in both versions' places, and why payment is (still) required.
    fn payment_required(&self, error: &str) -> Response {
        let v2 = v2::PaymentRequired {
            x402_version: 2,
            error: Some(error.into()),
            resource: ResourceInfo {
                url: self.resource.clone(),
                description: Some(self.description.clone()),
                mime_type: Some("application/json".into()),
            },
            accepts: vec![self.v2_requirements()],
            extensions: None,
        };
        let v1 = v1::PaymentRequired {
            x402_version: 1,
            error: error.into(),
            accepts: vec![self.v1_requirements()],
        };
        let mut response = (StatusCode::PAYMENT_REQUIRED, Json(v1)).into_response();
        if let Ok(value) = HeaderValue::from_str(&encode_header(&v2)) {
            response.headers_mut().insert(headers::PAYMENT_REQUIRED, value);
        }
        response
    }
}

pub async fn purchase(
    State(state): State<Arc<AppState>>,
    Path((agent_id, service_path)): Path<(String, String)>,
    request_headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let terms = terms(&state, &agent_id, &service_path).await?;
    let task_request = task_request(body)?;

    let (version, header) =
        match (request_headers.get(headers::PAYMENT_SIGNATURE), request_headers.get(headers::X_PAYMENT)) {
            (Some(header), _) => (2, header),
            (None, Some(header)) => (1, header),
            (None, None) => {
                return Ok(terms.payment_required(
                    "PAYMENT-SIGNATURE (x402 v2) or X-PAYMENT (x402 v1) header is required",
                ));
            }
        };
    let Ok(header) = header.to_str() else {
        return Ok(terms.payment_required(&ErrorReason::InvalidPayload.to_string()));
    };
    let payment = match PaymentPayload::from_header(version, header) {
        Ok(payment) => payment,
        Err(error) => {
            tracing::debug!(%error, "undecodable payment header");
            return Ok(terms.payment_required(&ErrorReason::InvalidPayload.to_string()));
        }
    };
    let verified = match payment.verify(&terms.offer, now_secs()) {
        Ok(verified) => verified,
        Err(reason) => return Ok(terms.payment_required(&reason.to_string())),
    };

    let stored = StoredPayment {
        x402_version: payment.version(),
        payload: match &payment {
            PaymentPayload::V1(payload) => serde_json::to_value(payload),
            PaymentPayload::V2(payload) => serde_json::to_value(payload),
        }
        .map_err(ApiError::internal)?,
        requirements: crate::facilitator::requirements_for(
            &payment,
            &terms.v1_requirements(),
            &terms.v2_requirements(),
        ),
    };
    let authorization = &verified.authorization;
    let claim = NewPayment {
        chain_id: i64::try_from(terms.offer.network.chain_id).map_err(ApiError::internal)?,
        asset: hex(terms.offer.asset),
        payer: hex(verified.payer),
        nonce: hex(authorization.nonce),
        amount: authorization.value.to_string(),
        agent_id: terms.agent_id.to_string(),
        service_path: terms.service_path.clone(),
        x402_version: i32::from(payment.version()),
        payment: serde_json::to_string(&stored).map_err(ApiError::internal)?,
        valid_before: i64::try_from(authorization.valid_before).unwrap_or(i64::MAX),
        request: serde_json::to_string(&task_request).map_err(ApiError::internal)?,
        search_from_block: state
            .payments
            .search_from_block()
            .await
            .map_err(|error| ApiError::unavailable(format!("the chain is unreachable: {error}"), 5))?,
    };
    let payments = state.payments.clone();
    let (id, _) = payments.claim(claim).await.map_err(ApiError::internal)?;

    // The pipeline runs on its own task: a client that hangs up does not stop its payment half-way.
    let advancing = tokio::spawn({
        let payments = payments.clone();
        async move { payments.advance(id).await }
    });
    let outcome = match advancing.await.map_err(ApiError::internal)? {
        Ok(Outcome::InProgress { .. }) => payments.wait_for(id, state.config.purchase_timeout).await,
        other => other,
    };
    match outcome {
        Ok(Outcome::Recorded(task_id)) => Ok(paid(&terms, &payment, verified.payer, task_id)),
        Ok(Outcome::Failed(reason)) => Ok(terms.payment_required(&reason.to_string())),
        Ok(Outcome::InProgress { deposit_id }) => Err(ApiError::unavailable(
            match deposit_id {
                Some(id) => format!("payment settled as {}; its deposit is being recorded. Send the same request again to get the taskId", hex(id)),
                None => "payment accepted and being settled. Send the same request again to get the taskId; it is never charged twice".into(),
            },
            2,
        )),
        Err(error) => {
            tracing::warn!(payment = id, %error, "purchase left to the reconciler");
            Err(ApiError::unavailable(
                "payment accepted; settlement hit a temporary problem and is being retried. Send the same request again to get the taskId; it is never charged twice",
                5,
            ))
        }
    }
}

fn paid(
    terms: &Terms,
    payment: &PaymentPayload,
    payer: Address,
    task_id: alloy::primitives::B256,
) -> Response {
    let task_id = hex(task_id);
    let (header, network) = match payment {
        PaymentPayload::V1(_) => (headers::X_PAYMENT_RESPONSE, terms.offer.network.v1_name()),
        PaymentPayload::V2(_) => (headers::PAYMENT_RESPONSE, terms.offer.network.caip2()),
    };
    let settled = SettleResponse {
        success: true,
        error_reason: None,
        payer: Some(payer),
        transaction: task_id.clone(),
        network,
    };
    let mut response = Json(json!({
        "taskId": task_id,
        "message": "Task created. Poll /tasks/:taskId/result for results.",
    }))
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&encode_header(&settled)) {
        response.headers_mut().insert(header, value);
    }
    response
}

async fn terms(state: &AppState, agent_id: &str, service_path: &str) -> Result<Terms, ApiError> {
    let id = U256::from_str_radix(agent_id, 10).map_err(|_| {
        ApiError::not_found(format!("agent {agent_id:?} is not registered (agent ids are numbers)"))
    })?;
    let agent = state.catalog.agent(id).await.map_err(|error| match error {
        CatalogError::UnknownAgent(_) | CatalogError::BadRegistration { .. } => {
            ApiError::not_found(error.to_string())
        }
        CatalogError::Unavailable { .. } => ApiError::unavailable(error.to_string(), 5),
    })?;
    let entry = agent
        .entry(service_path)
        .ok_or_else(|| ApiError::not_found(format!("agent {id} sells nothing at {service_path:?}")))?;
    let amount = parse_price(&entry.price, state.config.token_decimals).map_err(|error| {
        ApiError::not_found(format!("agent {id}'s catalog entry {service_path:?} is unusable: {error}"))
    })?;
    let config = &state.config;
    Ok(Terms {
        agent_id: id,
        service_path: service_path.to_owned(),
        description: entry.description.clone(),
        resource: config.resource_url(&id.to_string(), service_path),
        offer: config.offer(amount),
    })
}

/// The purchase body: `task_detail`, `task_metadata`, `reviewer_request`; any other field goes to the
/// vendor as `requestPayload`. An empty body is an empty request.
fn task_request(body: Result<Bytes, BytesRejection>) -> Result<TaskRequest, ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        ApiError::new(
            status,
            if status == StatusCode::PAYLOAD_TOO_LARGE { "body_too_large" } else { "bad_body" },
            rejection.body_text(),
        )
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(TaskRequest::default());
    }
    let mut fields: Map<String, Value> = serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request("bad_json", format!("the request body must be a JSON object: {error}"))
    })?;
    let text = |fields: &mut Map<String, Value>, name: &str| match fields.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(ApiError::bad_request("bad_field", format!("{name} must be a string"))),
    };
    let task_detail = text(&mut fields, "task_detail")?;
    let reviewer_request = text(&mut fields, "reviewer_request")?;
    let task_metadata = match fields.remove("task_metadata") {
        None | Some(Value::Null) => None,
        Some(metadata @ Value::Object(_)) => Some(metadata.to_string()),
        Some(_) => return Err(ApiError::bad_request("bad_field", "task_metadata must be a JSON object")),
    };
    let request_payload = (!fields.is_empty()).then(|| Value::Object(fields).to_string());
    Ok(TaskRequest { task_detail, task_metadata, reviewer_request, request_payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<TaskRequest, ApiError> {
        task_request(Ok(Bytes::from(body.to_owned())))
    }

    #[test]
    fn splits_the_known_fields_from_the_payload() {
        let request = parse(r#"{"task_detail":"Translate","task_metadata":{"source_lang":"en"},"reviewer_request":"accurate","text":"hi","n":2}"#)
            .expect("valid");
        assert_eq!(request.task_detail.as_deref(), Some("Translate"));
        assert_eq!(request.task_metadata.as_deref(), Some(r#"{"source_lang":"en"}"#));
        assert_eq!(request.reviewer_request.as_deref(), Some("accurate"));
        assert_eq!(request.request_payload.as_deref(), Some(r#"{"n":2,"text":"hi"}"#));
        assert_eq!(parse("").expect("empty"), TaskRequest::default());
    }

    #[test]
    fn refuses_malformed_bodies_with_the_reason() {
        for (body, code) in [
            ("{", "bad_json"),
            ("[1]", "bad_json"),
            (r#"{"task_detail":5}"#, "bad_field"),
            (r#"{"task_metadata":"text"}"#, "bad_field"),
        ] {
            let error = parse(body).expect_err(body);
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(error.code, code, "{body}");
        }
    }
}
