//! `POST /agents/register`: Agentripe's simplified registration. The caller proves it controls its
//! address with the vendor headers (`X-Vendor-Address`, `X-Timestamp`, `X-Signature`), the server
//! checks the registration file, points its endpoints at itself, mints the agent and gives it to the
//! caller: `201 {"agentId", "transactionHash", "walletSet"}`.

use agentripe_x402::{ExactEvmPayload, Offer, PaymentPayload, v2};
use alloy::primitives::U256;
use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{json::JsonBody, purchase::payment_required};
use crate::{
    ApiError, AppState,
    registrar::{Refusal, RegisterError},
    util::{now_secs, to_i64},
    vendor_auth::verify_signed,
};

/// Agentripe's registration body: the registration file, and optionally the payout wallet.
#[derive(Debug, Deserialize)]
pub struct RegisterBody {
    #[serde(default)]
    data: Value,
    wallet: Option<Value>,
}

fn invalid(field: &str, problem: &str) -> ApiError {
    ApiError::bad_request("invalid_field", format!("{field} {problem}"))
}

/// Checks Agentripe's validation rules, naming the field at fault, and points endpoints at `public_url`.
fn validate(
    mut data: Value,
    public_url: &str,
    price: &dyn Fn(&str) -> Result<U256, String>,
) -> Result<Value, ApiError> {
    let Some(object) = data.as_object_mut() else { return Err(invalid("data", "must be a JSON object")) };
    match object.get("name") {
        Some(Value::String(name)) if !name.trim().is_empty() => {}
        _ => return Err(invalid("data.name", "is required: a non-empty string")),
    }
    let Some(Value::Array(services)) = object.get_mut("services") else {
        return Err(invalid("data.services", "is required: a non-empty array"));
    };
    if services.is_empty() {
        return Err(invalid("data.services", "must not be empty"));
    }
    for (s, service) in services.iter_mut().enumerate() {
        let Some(service) = service.as_object_mut() else {
            return Err(invalid(&format!("data.services[{s}]"), "must be an object"));
        };
        if !service.get("name").is_some_and(Value::is_string) {
            return Err(invalid(&format!("data.services[{s}].name"), "is required"));
        }
        service.insert("endpoint".into(), Value::String(public_url.to_owned()));
        let catalog = match service.get("catalog") {
            None => continue,
            Some(Value::Array(catalog)) => catalog,
            Some(_) => return Err(invalid(&format!("data.services[{s}].catalog"), "must be an array")),
        };
        for (c, entry) in catalog.iter().enumerate() {
            let at = |field: &str| format!("data.services[{s}].catalog[{c}].{field}");
            for field in ["path", "price", "type", "description"] {
                match entry.get(field) {
                    Some(Value::String(text)) if !text.trim().is_empty() => {}
                    _ => return Err(invalid(&at(field), "is required: a non-empty string")),
                }
            }
            price(entry["price"].as_str().unwrap_or_default())
                .map_err(|problem| invalid(&at("price"), &format!("is invalid: {problem}")))?;
            let path = entry["path"].as_str().unwrap_or_default();
            if path.contains('/') || path.contains('?') {
                return Err(invalid(&at("path"), "must be one URL segment (no / or ?)"));
            }
        }
    }
    Ok(data)
}

pub async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<RegisterBody>,
) -> Result<Response, ApiError> {
    let signed = verify_signed(&headers, now_secs())?;
    let owner = signed.signer;
    if let Some(wallet) = &body.wallet {
        let same = wallet
            .get("address")
            .and_then(Value::as_str)
            .and_then(|a| a.parse::<alloy::primitives::Address>().ok())
            == Some(owner);
        if !same {
            return Err(ApiError::bad_request(
                "wallet_unsupported",
                "a payout wallet other than your own address cannot be set here: the registry clears the wallet when \
                 the server hands you the agent. Register, then call setAgentWallet yourself; until then payouts go to you",
            ));
        }
    }
    let config = &state.config;
    let data = validate(body.data, &config.public_url, &|text| config.price(text))?;
    let uri = format!("data:application/json;base64,{}", STANDARD.encode(data.to_string()));
    let max_bytes = config.registration.max_bytes;
    if uri.len() > max_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "registration_too_large",
            format!(
                "the registration file takes {} bytes as a data: URI, more than this server mints ({max_bytes}): \
                 shorten it, or host it yourself and register on chain with its URL",
                uri.len()
            ),
        ));
    }
    let fee = match registration_fee(&state, &headers) {
        Ok(fee) => fee,
        Err(payment_required) => return Ok(*payment_required),
    };
    // Signed headers register once: a captured set cannot make the operator mint again.
    let now = now_secs();
    if !state.store.use_signature(&signed.id(), to_i64(signed.expires_at()), to_i64(now)).await? {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "signature_used",
            "these signed headers were already used to register: sign a fresh X-Timestamp",
        ));
    }
    let (agent_id, transaction) =
        state.registrar.register(owner, &uri, fee.as_ref()).await.map_err(refusal)?;
    let agent_id: Value =
        u64::try_from(agent_id).map_or_else(|_| Value::String(agent_id.to_string()), Value::from);
    Ok((
        StatusCode::CREATED,
        Json(json!({ "agentId": agent_id, "transactionHash": format!("{transaction:#x}"), "walletSet": false })),
    )
        .into_response())
}

/// The registration fee's payment when one is due (verified against the operator's offer), or the 402
/// that asks for it. Nothing is spent or stored before the payment is there.
fn registration_fee(state: &AppState, headers: &HeaderMap) -> Result<Option<ExactEvmPayload>, Box<Response>> {
    let config = &state.config;
    let Some(amount) = config.registration.fee else { return Ok(None) };
    let offer = Offer { pay_to: config.operator_key.address(), ..config.offer(amount) };
    let resource = v2::ResourceInfo {
        url: format!("{}/agents/register", config.public_url.trim_end_matches('/')),
        description: Some("Registration fee: the operator mints your agent and pays its gas".into()),
        mime_type: Some("application/json".into()),
    };
    let required = |error: &str| Box::new(payment_required(&offer, &resource, error, None));
    match PaymentPayload::from_headers(headers) {
        None => Err(required(
            "a registration fee is due: PAYMENT-SIGNATURE (x402 v2) or X-PAYMENT (x402 v1) header",
        )),
        Some(Err(reason)) => Err(required(&reason.to_string())),
        Some(Ok(payment)) => match payment.verify(&offer, now_secs()) {
            Ok(_) => Ok(Some(payment.exact().clone())),
            Err(reason) => Err(required(&reason.to_string())),
        },
    }
}

fn refusal(error: RegisterError) -> ApiError {
    let message = error.to_string();
    match error {
        RegisterError::Refused(Refusal::SignerLimit { .. }) => ApiError {
            retry_after: Some(3600),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        },
        RegisterError::Refused(Refusal::BudgetSpent { .. }) => ApiError::unavailable(message, 3600),
        RegisterError::Refused(Refusal::Unmintable(_)) => {
            ApiError::bad_request("registration_unmintable", message)
        }
        RegisterError::Refused(Refusal::FeeUnpaid(_)) => {
            ApiError::new(StatusCode::PAYMENT_REQUIRED, "registration_fee_unpaid", message)
        }
        RegisterError::Pipeline(error) => {
            ApiError::unavailable_because("registration is under way and will be finished", error, 10)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::catalog::parse_price;

    fn six_decimals(text: &str) -> Result<U256, String> {
        parse_price(text, 6)
    }

    fn valid() -> Value {
        json!({
            "name": "Translator",
            "services": [{ "name": "x402", "endpoint": "/", "catalog": [
                { "path": "translate", "price": "$0.10", "type": "async", "description": "Translate" }
            ]}]
        })
    }

    #[test]
    fn points_endpoints_at_the_server() {
        let data = validate(valid(), "https://market.test", &six_decimals).expect("valid");
        assert_eq!(data["services"][0]["endpoint"], "https://market.test");
    }

    #[test]
    fn each_rule_names_its_field() {
        type Edit = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|d| {
                    d.as_object_mut().map(|o| o.remove("name"));
                }),
                "data.name",
            ),
            (Box::new(|d| d["name"] = json!("  ")), "data.name"),
            (Box::new(|d| d["services"] = json!([])), "data.services"),
            (
                Box::new(|d| {
                    d.as_object_mut().map(|o| o.remove("services"));
                }),
                "data.services",
            ),
            (
                Box::new(|d| d["services"][0]["catalog"][0]["price"] = json!("0.10")),
                "data.services[0].catalog[0].price",
            ),
            (
                Box::new(|d| d["services"][0]["catalog"][0]["price"] = json!("$0.1234567")),
                "data.services[0].catalog[0].price",
            ),
            (
                Box::new(|d| {
                    d["services"][0]["catalog"][0].as_object_mut().map(|o| o.remove("path"));
                }),
                "data.services[0].catalog[0].path",
            ),
            (
                Box::new(|d| d["services"][0]["catalog"][0]["path"] = json!("a/b")),
                "data.services[0].catalog[0].path",
            ),
            (
                Box::new(|d| {
                    d["services"][0]["catalog"][0].as_object_mut().map(|o| o.remove("type"));
                }),
                "data.services[0].catalog[0].type",
            ),
            (
                Box::new(|d| d["services"][0]["catalog"][0]["description"] = json!("")),
                "data.services[0].catalog[0].description",
            ),
        ];
        for (edit, field) in cases {
            let mut data = valid();
            edit(&mut data);
            let error = validate(data, "https://market.test", &six_decimals).expect_err(field);
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{field}");
            assert!(error.message.starts_with(field), "{field}: {}", error.message);
        }
        assert!(validate(json!("text"), "u", &six_decimals).is_err());
    }
}
