//! The one JSON body extractor of the API. Every body is a JSON object (an empty body is an empty
//! object); what is wrong is answered as a JSON error: `body_timeout` (408, not whole in time: see
//! `http_server::HttpLimits`), `body_too_large` (413), `bad_json` (400, not a JSON object), `bad_field`
//! (400, naming the field and what it must be). Text holding U+0000 is refused here, before any money
//! moves: PostgreSQL cannot store it, and both engines must behave alike.

use axum::{
    body::{Body, Bytes},
    extract::{FromRequest, Request},
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tower_http::timeout::DeadlineBody;

use crate::{ApiError, http_server::BodyDeadline};

/// A JSON object body deserialized into `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let request = match request.extensions().get::<BodyDeadline>().copied() {
            Some(BodyDeadline(limit)) => request.map(|body| Body::new(DeadlineBody::new(limit, body))),
            None => request,
        };
        let bytes = Bytes::from_request(request, state).await?;
        let value: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Object(serde_json::Map::new())
        } else {
            serde_json::from_slice(&bytes).map_err(|error| {
                ApiError::bad_request("bad_json", format!("the request body must be a JSON object: {error}"))
            })?
        };
        if !value.is_object() {
            return Err(ApiError::bad_request("bad_json", "the request body must be a JSON object"));
        }
        if let Some(path) = nul_at(&value, String::new()) {
            return Err(ApiError::bad_request(
                "bad_field",
                format!("{path}: text must not contain the NUL character (U+0000)"),
            ));
        }
        serde_path_to_error::deserialize(value).map(JsonBody).map_err(|error| {
            ApiError::bad_request("bad_field", format!("{}: {}", error.path(), error.inner()))
        })
    }
}

/// Where in `value` a string or key holds U+0000, if anywhere.
fn nul_at(value: &Value, path: String) -> Option<String> {
    let at = |key: &str| if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") };
    match value {
        Value::String(text) => text.contains('\0').then_some(path),
        Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, item)| nul_at(item, format!("{path}[{i}]")))
        }
        Value::Object(fields) => {
            fields.iter().find_map(
                |(key, item)| {
                    if key.contains('\0') { Some(at("<key>")) } else { nul_at(item, at(key)) }
                },
            )
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A handler may work before it reads its body (a vendor's signature checked on a slow chain): that
    /// time is not the client's, and must not count against its body's deadline.
    #[tokio::test]
    async fn the_body_deadline_runs_from_the_read() {
        let mut request = Request::new(Body::from(r#"{"task_detail":"sent at once"}"#));
        request.extensions_mut().insert(BodyDeadline(Duration::from_millis(50)));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let JsonBody(body) = JsonBody::<Value>::from_request(request, &()).await.expect("read in time");
        assert_eq!(body["task_detail"], "sent at once");
    }

    #[test]
    fn finds_nul_anywhere() {
        let nul = |text: &str| nul_at(&serde_json::from_str(text).expect("json"), String::new());
        assert_eq!(nul(r#"{"task_detail":"a\u0000b"}"#).as_deref(), Some("task_detail"));
        assert_eq!(
            nul(r#"{"task_metadata":{"list":["ok","\u0000"]}}"#).as_deref(),
            Some("task_metadata.list[1]")
        );
        assert_eq!(nul(r#"{"x\u0000":1}"#).as_deref(), Some("<key>"));
        assert_eq!(nul(r#"{"task_detail":"fine","n":0}"#), None);
    }
}
