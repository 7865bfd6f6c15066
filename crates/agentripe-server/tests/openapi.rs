//! The OpenAPI document is held to the server: every operation it documents is routed, and real
//! answers (a purchase, the vendor loop, reads, registration, refusals) have a documented status and a
//! body that validates against the documented schema.

use agentripe_server::testing::{LlmAnswer, Market, PRICE, ScriptedLlm, Server, key, now, vendor_headers};
use agentripe_store::testing::Engine;
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

const DOCUMENT: &str = include_str!("../openapi.json");

/// Asserts that an answer to `method path-template` is documented: its status, and its body's schema.
fn check(document: &Value, method: &str, template: &str, status: u16, body: &Value) {
    let operation = &document["paths"][template][method.to_ascii_lowercase()];
    assert!(operation.is_object(), "{method} {template} is not documented");
    let mut response = &operation["responses"][status.to_string()];
    assert!(response.is_object(), "{method} {template} answered {status}, which is not documented: {body}");
    if let Some(reference) = response["$ref"].as_str() {
        let pointer = reference.trim_start_matches('#');
        response = document.pointer(pointer).unwrap_or_else(|| panic!("dangling {reference}"));
    }
    let Some(schema) = response.pointer("/content/application~1json/schema") else {
        panic!("{method} {template} {status} documents no JSON body, but answered {body}");
    };
    // The schema's references point into the document's components.
    let mut root = schema.clone();
    root["components"] = document["components"].clone();
    let validator = jsonschema::draft202012::new(&root).expect("the documented schema compiles");
    let errors: Vec<String> =
        validator.iter_errors(body).map(|error| format!("{} at {}", error, error.instance_path())).collect();
    assert!(errors.is_empty(), "{method} {template} {status} does not match its schema: {errors:?}\n{body}");
}

/// Sends a request, checks its answer against the document, and returns it.
async fn call(document: &Value, template: &str, request: RequestBuilder) -> (u16, Value) {
    let request = request.build().expect("request");
    let method = request.method().to_string();
    let response = reqwest::Client::new().execute(request).await.expect("send");
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    check(document, &method, template, status, &body);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served() {
    let market = Market::new(Engine::Sqlite, "openapi_routes").await.expect("SQLite needs no set-up");
    let server = market.start().await;
    let document: Value = serde_json::from_str(DOCUMENT).expect("JSON");
    let served = server.get_json("/openapi.json").await;
    assert_eq!(served, document, "the served document is the one in the repository");

    let task = format!("0x{}", "ab".repeat(32));
    for (path, item) in document["paths"].as_object().expect("paths") {
        let concrete = path
            .replace("{agentId}", &market.agent_id.to_string())
            .replace("{servicePath}", "translate")
            .replace("{taskId}", &task);
        for method in ["get", "post"].iter().filter(|method| item.get(**method).is_some()) {
            let request = match *method {
                "get" => server.http.get(format!("{}{concrete}", server.base)),
                _ => server.http.post(format!("{}{concrete}", server.base)).json(&json!({})),
            };
            let response = request.send().await.expect("request");
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_ne!(status, 405, "{method} {path}");
            assert_ne!(body["message"], "no such endpoint", "{method} {path} is documented but not routed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_match_the_document() {
    let market = Market::new(Engine::Sqlite, "openapi_answers").await.expect("SQLite needs no set-up");
    let llm = ScriptedLlm::start(vec![
        LlmAnswer::verdict(false, "Too short"),
        LlmAnswer::verdict(true, "Accurate"),
    ])
    .await;
    let mut config = market.config();
    config.reviewer = Some(llm.reviewer());
    let server: Server = market.start_with(config).await;
    let document: Value = serde_json::from_str(DOCUMENT).expect("JSON");
    let doc = &document;
    let url = |path: &str| format!("{}{path}", server.base);
    let http = &server.http;
    let vendor = |method: Method, path: &str| {
        http.request(method, url(path)).headers(vendor_headers(&market.vendor, market.agent_id, now()))
    };
    let agent = market.agent_id.to_string();
    let purchase = format!("/{agent}/translate");

    call(doc, "/health", http.get(url("/health"))).await;
    call(doc, "/openapi.json", http.get(url("/openapi.json"))).await;
    call(doc, "/agents", http.get(url("/agents?q=translate"))).await;
    assert_eq!(call(doc, "/agents", http.get(url("/agents?limit=0"))).await.0, 400);
    assert_eq!(call(doc, "/agents/{agentId}", http.get(url(&format!("/agents/{agent}")))).await.0, 200);
    assert_eq!(call(doc, "/agents/{agentId}", http.get(url("/agents/99999"))).await.0, 404);
    call(doc, "/discovery/resources", http.get(url("/discovery/resources"))).await;

    // Money in: asked, refused, malformed, unknown, paid.
    let template = "/{agentId}/{servicePath}";
    assert_eq!(call(doc, template, http.get(url(&purchase))).await.0, 402);
    let broke = market.buyer(0).await;
    let refused = http.post(url(&purchase)).header("PAYMENT-SIGNATURE", market.pay_v2(&broke));
    assert_eq!(call(doc, template, refused).await.0, 402);
    assert_eq!(call(doc, template, http.post(url(&purchase)).body("{")).await.0, 400);
    assert_eq!(call(doc, template, http.post(url(&format!("/{agent}/nothing")))).await.0, 404);
    let buyer = market.buyer(2 * PRICE).await;
    let body = json!({ "task_detail": "Translate", "reviewer_request": "Accurate Japanese" });
    let header = market.pay_v2(&buyer);
    let paid = http.post(url(&purchase)).header("PAYMENT-SIGNATURE", &header).json(&body);
    let (status, answer) = call(doc, template, paid).await;
    assert_eq!(status, 200);
    let task = answer["taskId"].as_str().expect("taskId").to_owned();
    let signed: agentripe_x402::v2::PaymentPayload = agentripe_x402::decode_header(&header).expect("v2");
    let (payer, nonce) = (signed.payload.authorization.from, signed.payload.authorization.nonce);
    let payment = format!("/payments/{payer:#x}/{nonce:#x}");
    let (_, followed) = call(doc, "/payments/{payer}/{nonce}", http.get(url(&payment))).await;
    assert_eq!(
        (followed["status"].as_str(), followed["taskId"].as_str()),
        (Some("recorded"), Some(task.as_str()))
    );
    let mine = http
        .get(url("/buyer/tasks"))
        .headers(agentripe_server::vendor_auth::buyer_headers(&buyer, now()).expect("sign"));
    let (_, listed) = call(doc, "/buyer/tasks", mine).await;
    assert_eq!(listed["tasks"][0]["id"].as_str(), Some(task.as_str()));
    assert_eq!(call(doc, "/buyer/tasks", http.get(url("/buyer/tasks"))).await.0, 401);
    let never = format!("/payments/{payer:#x}/0x{}", "02".repeat(32));
    assert_eq!(call(doc, "/payments/{payer}/{nonce}", http.get(url(&never))).await.0, 404);

    // Reads.
    assert_eq!(call(doc, "/tasks/{taskId}", http.get(url(&format!("/tasks/{task}")))).await.0, 200);
    let unknown = format!("/tasks/0x{}", "cd".repeat(32));
    assert_eq!(call(doc, "/tasks/{taskId}", http.get(url(&unknown))).await.0, 404);
    let result = format!("/tasks/{task}/result");
    assert_eq!(call(doc, "/tasks/{taskId}/result", http.get(url(&result))).await.0, 202);

    // The vendor loop: refusals, a rejection, an approval.
    assert_eq!(call(doc, "/vendor/tasks", http.get(url("/vendor/tasks"))).await.0, 401);
    assert_eq!(call(doc, "/vendor/tasks", vendor(Method::GET, "/vendor/tasks?status=all")).await.0, 200);
    assert_eq!(call(doc, "/vendor/tasks", vendor(Method::GET, "/vendor/tasks?status=bogus")).await.0, 400);
    let action = |name: &str| format!("/vendor/tasks/{task}/{name}");
    let complete = "/vendor/tasks/{taskId}/complete";
    assert_eq!(
        call(doc, complete, vendor(Method::POST, &action("complete")).json(&json!({"result": "x"}))).await.0,
        409
    );
    assert_eq!(
        call(doc, "/vendor/tasks/{taskId}/start", vendor(Method::POST, &action("start"))).await.0,
        200
    );
    assert_eq!(
        call(doc, "/vendor/tasks/{taskId}/start", vendor(Method::POST, &action("start"))).await.0,
        409
    );
    assert_eq!(call(doc, complete, vendor(Method::POST, &action("complete")).json(&json!({}))).await.0, 400);
    let (_, rejected) =
        call(doc, complete, vendor(Method::POST, &action("complete")).json(&json!({"result": "x"}))).await;
    assert_eq!(rejected["escrowAction"], "none");
    let (_, approved) =
        call(doc, complete, vendor(Method::POST, &action("complete")).json(&json!({"result": "こんにちは"})))
            .await;
    assert_eq!(approved["escrowAction"], "released");
    assert_eq!(call(doc, "/tasks/{taskId}/result", http.get(url(&result))).await.0, 200);

    // A vendor giving up.
    let paid = http.post(url(&purchase)).header("PAYMENT-SIGNATURE", market.pay_v2(&buyer)).json(&json!({}));
    let (_, answer) = call(doc, template, paid).await;
    let failing = format!("/vendor/tasks/{}/fail", answer["taskId"].as_str().expect("taskId"));
    let fail = "/vendor/tasks/{taskId}/fail";
    assert_eq!(call(doc, fail, vendor(Method::POST, &failing).json(&json!({}))).await.0, 400);
    let (status, failed) =
        call(doc, fail, vendor(Method::POST, &failing).json(&json!({"errorMessage": "no"}))).await;
    assert_eq!((status, failed["escrowAction"].as_str()), (200, Some("refunded")));
    assert_eq!(
        call(doc, fail, vendor(Method::POST, &failing).json(&json!({"errorMessage": "no"}))).await.0,
        409
    );
    let stranger = http
        .post(url(&failing))
        .headers(vendor_headers(&key(&market.anvil, 7), market.agent_id, now()))
        .json(&json!({"errorMessage": "no"}));
    assert_eq!(call(doc, fail, stranger).await.0, 403);

    // Registration.
    let register = "/agents/register";
    let data = json!({ "data": serde_json::from_str::<Value>(agentripe_server::testing::CATALOG).expect("catalog") });
    assert_eq!(call(doc, register, http.post(url(register)).json(&data)).await.0, 401);
    let registrant = key(&market.anvil, 6);
    let signed = |body: &Value| {
        http.post(url(register)).headers(vendor_headers(&registrant, market.agent_id, now())).json(body)
    };
    assert_eq!(call(doc, register, signed(&json!({ "data": { "name": "" } }))).await.0, 400);
    assert_eq!(call(doc, register, signed(&data)).await.0, 201);
}
