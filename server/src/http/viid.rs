//! The GA/T 1400.4 视图库 interface under `/VIID/`: registration with HTTP digest
//! authentication, keepalives, the time, and records posted by lower platforms and
//! collection devices. Answers are the standard's: `ResponseStatusObject` for one object,
//! `ResponseStatusListObject` record by record, as `application/VIID+JSON`.
//!
//! These routes are the standard's interface, not the hub's REST API: they are described in
//! `docs/viid.md`, not in the OpenAPI document.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use cityhub_catalog::viid::{self as accounts, ViidAccount};
use cityhub_catalog::{Action, AuditEvent, Outcome};
use cityhub_ingest::viid::fields::format_time;
use cityhub_ingest::viid::{
    RecordStatus, RequestRefused, Sender, StatusCode as Viid, ViidFailure, ViidKind,
};
use serde_json::{Value, json};

use super::extract::{BodyError, read_body_within};
use crate::state::AppState;

/// The media type of every answer.
const VIID_JSON: &str = "application/VIID+JSON;charset=UTF-8";

/// The routes under `/VIID/`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/VIID/System/Register", post(register))
        .route("/VIID/System/UnRegister", post(unregister))
        .route("/VIID/System/Keepalive", post(keepalive))
        .route("/VIID/System/Time", get(time))
        .route("/VIID/SubscribeNotifications", post(notifications))
        .route("/VIID/Subscribes", post(subscribe).get(subscriptions))
        .route("/VIID/{resource}", post(records))
        // Bodies are read with the receiver's own limit, answered in the standard's shape.
        .layer(DefaultBodyLimit::disable())
}

/// `POST /VIID/System/Register` `{"RegisterObject": {"DeviceID": ...}}`: without a valid
/// `Authorization: Digest` answer, 401 with a challenge; with one, the account is
/// registered and its landing datasets exist.
async fn register(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    const URL: &str = "/VIID/System/Register";
    let now = state.clock.now();
    let body = match read_body(&state, body, &headers, URL, now).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let id = match device_id(&body, "RegisterObject", &headers) {
        Ok(id) => id,
        Err(message) => {
            return one(
                StatusCode::BAD_REQUEST,
                URL,
                Viid::InvalidJsonContent,
                "",
                &message,
                now,
            );
        }
    };
    let account = match state.catalog.viid_account(&id).await {
        Ok(account) => account,
        Err(err) => return failed(URL, &id, &err.to_string(), now),
    };
    let answer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(accounts::parse_digest);
    let checked = match (&account, &answer) {
        (Some(account), Some(answer)) => {
            accounts::check_digest(account, answer, "POST", URL, now).map(|()| account)
        }
        (None, Some(_)) => Err("no GA/T 1400 account has this id"),
        (_, None) => Err("send the registration again with an Authorization: Digest answer"),
    };
    let account = match checked {
        Ok(account) => account,
        Err(reason) => {
            if answer.is_some() {
                // A wrong password or a forged answer is worth an operator's look.
                audit_account(
                    &state,
                    &id,
                    account.as_ref(),
                    "register",
                    Outcome::Refused,
                    reason,
                );
                tracing::warn!(account = %id, reason, "Refused a GA/T 1400 registration.");
            }
            let ha1 = account.as_ref().map(|a| a.ha1.clone()).unwrap_or_else(|| {
                // Unknown ids get a challenge like any other, keyed by nothing they know.
                uuid::Uuid::new_v4().to_string()
            });
            let mut response = one(
                StatusCode::UNAUTHORIZED,
                URL,
                Viid::InvalidOperation,
                &id,
                &format!("unauthorized: {reason}"),
                now,
            );
            if let Ok(value) =
                HeaderValue::from_str(&accounts::challenge(&accounts::nonce(&ha1, now)))
            {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
            return response;
        }
    };
    if let Err(err) = state
        .catalog
        .set_viid_registration(&account.id, Some(now))
        .await
    {
        return failed(URL, &id, &err.to_string(), now);
    }
    if let Err(err) = state.viid.ensure_datasets(&account.department).await {
        return failed(URL, &id, &err.to_string(), now);
    }
    audit_account(
        &state,
        &id,
        Some(account),
        "register",
        Outcome::Ok,
        "registered",
    );
    tracing::info!(account = %id, department = %account.department, "A GA/T 1400 platform registered.");
    one(StatusCode::OK, URL, Viid::Ok, &id, "OK", now)
}

/// `POST /VIID/System/UnRegister` `{"UnRegisterObject": {"DeviceID": ...}}`.
async fn unregister(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    const URL: &str = "/VIID/System/UnRegister";
    let now = state.clock.now();
    let account = match system_request(&state, &headers, body, URL, "UnRegisterObject", now).await {
        Ok(account) => account,
        Err(answer) => return answer,
    };
    if let Err(err) = state.catalog.set_viid_registration(&account.id, None).await {
        return failed(URL, &account.id, &err.to_string(), now);
    }
    audit_account(
        &state,
        &account.id,
        Some(&account),
        "unregister",
        Outcome::Ok,
        "unregistered",
    );
    tracing::info!(account = %account.id, "A GA/T 1400 platform unregistered.");
    one(StatusCode::OK, URL, Viid::Ok, &account.id, "OK", now)
}

/// `POST /VIID/System/Keepalive` `{"KeepaliveObject": {"DeviceID": ...}}`.
async fn keepalive(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    const URL: &str = "/VIID/System/Keepalive";
    let now = state.clock.now();
    let account = match system_request(&state, &headers, body, URL, "KeepaliveObject", now).await {
        Ok(account) => account,
        Err(answer) => return answer,
    };
    match state.catalog.viid_keepalive(&account.id, now).await {
        Ok(true) => one(StatusCode::OK, URL, Viid::Ok, &account.id, "OK", now),
        // Unregistered between the two reads.
        Ok(false) => not_registered(URL, &account.id, now),
        Err(err) => failed(URL, &account.id, &err.to_string(), now),
    }
}

/// A system request of a registered account: its body read and its `{object: {DeviceID}}`
/// checked against `User-Identify`.
async fn system_request(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    url: &str,
    object: &str,
    now: DateTime<Utc>,
) -> Result<ViidAccount, Response> {
    let account = registered(state, headers, url, now).await?;
    let body = read_body(state, body, headers, url, now).await?;
    if let Err(message) = device_id(&body, object, headers) {
        return Err(one(
            StatusCode::BAD_REQUEST,
            url,
            Viid::InvalidJsonContent,
            &account.id,
            &message,
            now,
        ));
    }
    Ok(account)
}

/// `GET /VIID/System/Time`: the hub's time, for platforms to set their clocks by.
async fn time(State(state): State<AppState>) -> Response {
    let now = state.clock.now();
    viid_json(
        StatusCode::OK,
        json!({"SystemTimeObject": {
            "VIIDServerID": state.config.viid.server_id,
            "TimeMode": "1",
            "LocalTime": format_time(now),
            "TimeZone": "Asia/Shanghai",
        }}),
    )
}

/// `POST /VIID/{APEs|MotorVehicles|NonMotorVehicles|Faces|Persons}`: a list of records,
/// answered record by record.
async fn records(
    State(state): State<AppState>,
    Path(resource): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let url = format!("/VIID/{resource}");
    let now = state.clock.now();
    let Some(kind) = ViidKind::from_resource(&resource) else {
        return one(
            StatusCode::NOT_FOUND,
            &url,
            Viid::InvalidOperation,
            "",
            &format!(
                "the hub does not receive {resource}; it receives APEs, MotorVehicles, \
                 NonMotorVehicles, Faces, Persons, Images and SubscribeNotifications"
            ),
            now,
        );
    };
    let (sender, body) = match sender_and_body(&state, &headers, body, &url, now).await {
        Ok(received) => received,
        Err(answer) => return answer,
    };
    answer_receipt(
        &url,
        state.viid.receive(&sender, kind, body, now).await,
        now,
    )
}

/// `POST /VIID/SubscribeNotifications`: a lower platform delivering what the hub
/// subscribed to, answered one status per notification.
async fn notifications(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    const URL: &str = "/VIID/SubscribeNotifications";
    let now = state.clock.now();
    let (sender, body) = match sender_and_body(&state, &headers, body, URL, now).await {
        Ok(received) => received,
        Err(answer) => return answer,
    };
    answer_receipt(
        URL,
        state.viid.receive_notifications(&sender, body, now).await,
        now,
    )
}

/// `POST /VIID/Subscribes`: an upper platform subscribes to (or cancels) records landing
/// in its account's department; one status per `SubscribeObject`.
async fn subscribe(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    const URL: &str = "/VIID/Subscribes";
    let now = state.clock.now();
    let account = match registered(&state, &headers, URL, now).await {
        Ok(account) => account,
        Err(answer) => return answer,
    };
    let body = match read_body(&state, body, &headers, URL, now).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    answer_receipt(URL, state.viid.subscribe(&account, body, now).await, now)
}

/// `GET /VIID/Subscribes`: the caller's subscriptions with their `SubscribeStatus` (0
/// active, 1 cancelled, 2 expired, 9 dropped by the hub, with `Reason`) and `Delivered`.
async fn subscriptions(State(state): State<AppState>, headers: HeaderMap) -> Response {
    const URL: &str = "/VIID/Subscribes";
    let now = state.clock.now();
    let account = match registered(&state, &headers, URL, now).await {
        Ok(account) => account,
        Err(answer) => return answer,
    };
    match state.viid.subscription_list(&account).await {
        Ok(list) => viid_json(StatusCode::OK, list),
        Err(err) => failed(URL, &account.id, &err.to_string(), now),
    }
}

/// Who sent records (a registered account) and the body they sent.
async fn sender_and_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    url: &str,
    now: DateTime<Utc>,
) -> Result<(Sender, bytes::Bytes), Response> {
    let account = registered(state, headers, url, now).await?;
    let body = read_body(state, body, headers, url, now).await?;
    let sender = Sender {
        account_id: account.id,
        department: account.department,
    };
    Ok((sender, body))
}

/// The answer to a receipt: the statuses, or why nothing was looked at.
fn answer_receipt(
    url: &str,
    receipt: Result<Vec<RecordStatus>, ViidFailure>,
    now: DateTime<Utc>,
) -> Response {
    match receipt {
        Ok(statuses) => list(url, &statuses, now),
        Err(ViidFailure::Refused(RequestRefused { code, message })) => {
            one(StatusCode::BAD_REQUEST, url, code, "", &message, now)
        }
        Err(ViidFailure::Failed(err)) => failed(url, "", &err.to_string(), now),
    }
}

/// The registered account that `User-Identify` names, or the standard's 401.
async fn registered(
    state: &AppState,
    headers: &HeaderMap,
    url: &str,
    now: DateTime<Utc>,
) -> Result<ViidAccount, Response> {
    let Some(id) = headers
        .get("User-Identify")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|id| !id.is_empty())
    else {
        return Err(one(
            StatusCode::UNAUTHORIZED,
            url,
            Viid::InvalidOperation,
            "",
            "unauthorized: send the User-Identify header with your 20-digit id",
            now,
        ));
    };
    match state.catalog.viid_account(id).await {
        Ok(Some(account)) if account.registered(now) => Ok(account),
        Ok(_) => Err(not_registered(url, id, now)),
        Err(err) => Err(failed(url, id, &err.to_string(), now)),
    }
}

fn not_registered(url: &str, id: &str, now: DateTime<Utc>) -> Response {
    one(
        StatusCode::UNAUTHORIZED,
        url,
        Viid::InvalidOperation,
        id,
        "unauthorized: not registered, or no keepalive for 180 seconds; \
         POST /VIID/System/Register first",
        now,
    )
}

/// The `DeviceID` of a system request's object (`{"RegisterObject": {"DeviceID": ...}}`),
/// which must agree with `User-Identify` when both are sent.
fn device_id(body: &[u8], object: &str, headers: &HeaderMap) -> Result<String, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|err| format!("the body is not JSON: {err}"))?;
    let id = value
        .get(object)
        .and_then(|o| o.get("DeviceID"))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("expected {{\"{object}\": {{\"DeviceID\": \"<20-digit id>\"}}}}"))?;
    if let Some(user) = headers.get("User-Identify").and_then(|v| v.to_str().ok())
        && user.trim() != id
    {
        return Err(format!(
            "{object}.DeviceID {id} is not the User-Identify header's {}",
            user.trim()
        ));
    }
    Ok(id.to_string())
}

/// Reads the body up to `viid.max_body_bytes`, answering 413 in the standard's shape.
async fn read_body(
    state: &AppState,
    body: Body,
    headers: &HeaderMap,
    url: &str,
    now: DateTime<Utc>,
) -> Result<bytes::Bytes, Response> {
    let limit = state.config.viid.max_body_bytes;
    read_body_within(body, headers, limit)
        .await
        .map_err(|err| match err {
            BodyError::TooLarge => one(
                StatusCode::PAYLOAD_TOO_LARGE,
                url,
                Viid::InvalidOperation,
                "",
                &format!(
                    "the body is larger than {limit} bytes (viid.max_body_bytes); send fewer \
                     records per request"
                ),
                now,
            ),
            BodyError::Unreadable(err) => one(
                StatusCode::BAD_REQUEST,
                url,
                Viid::InvalidJsonFormat,
                "",
                &format!("the body could not be read: {err}"),
                now,
            ),
        })
}

/// One `ResponseStatusObject`.
fn one(
    http: StatusCode,
    url: &str,
    code: Viid,
    id: &str,
    message: &str,
    now: DateTime<Utc>,
) -> Response {
    let local_time = format_time(now);
    let status = StatusObject {
        request_url: url,
        status_code: code.code(),
        status_string: message,
        id,
        local_time: &local_time,
    };
    viid_json(http, json!({ "ResponseStatusObject": status }))
}

/// A failure of the hub, not of the request: the sender should try again.
fn failed(url: &str, id: &str, message: &str, now: DateTime<Utc>) -> Response {
    tracing::warn!(
        url,
        id,
        error = message,
        "A GA/T 1400 request failed in the hub."
    );
    one(
        StatusCode::SERVICE_UNAVAILABLE,
        url,
        Viid::OtherError,
        id,
        &format!("not stored, send it again: {message}"),
        now,
    )
}

/// One `ResponseStatusObject`, written straight from the status (a list answers up to a
/// thousand records; building a JSON tree for each showed in the receiver's profile).
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct StatusObject<'a> {
    #[serde(rename = "RequestURL")]
    request_url: &'a str,
    status_code: u8,
    status_string: &'a str,
    id: &'a str,
    local_time: &'a str,
}

#[derive(serde::Serialize)]
struct StatusList<'a> {
    #[serde(rename = "ResponseStatusListObject")]
    list: StatusObjects<'a>,
}

#[derive(serde::Serialize)]
struct StatusObjects<'a> {
    #[serde(rename = "ResponseStatusObject")]
    objects: Vec<StatusObject<'a>>,
}

/// `ResponseStatusListObject`, one status per record in the order sent.
fn list(url: &str, statuses: &[RecordStatus], now: DateTime<Utc>) -> Response {
    let local_time = format_time(now);
    let objects: Vec<StatusObject<'_>> = statuses
        .iter()
        .map(|s| StatusObject {
            request_url: url,
            status_code: s.code.code(),
            status_string: &s.message,
            id: &s.id,
            local_time: &local_time,
        })
        .collect();
    let body = StatusList {
        list: StatusObjects { objects },
    };
    match serde_json::to_string(&body) {
        Ok(text) => viid_text(StatusCode::OK, text),
        Err(err) => failed(
            url,
            "",
            &format!("the answer could not be written: {err}"),
            now,
        ),
    }
}

fn viid_json(status: StatusCode, body: Value) -> Response {
    viid_text(status, body.to_string())
}

fn viid_text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(VIID_JSON))],
        body,
    )
        .into_response()
}

fn audit_account(
    state: &AppState,
    id: &str,
    account: Option<&ViidAccount>,
    event: &str,
    outcome: Outcome,
    detail: &str,
) {
    let mut entry = AuditEvent::by_hub(Action::ViidAccount, outcome)
        .detail(json!({"account": id, "event": event, "detail": detail}));
    entry.principal = Some(format!("viid:{id}"));
    entry.department = account.map(|a| a.department.clone());
    state.audit.record(entry);
    metrics::counter!("cityhub_viid_registrations_total", "event" => event.to_string(), "outcome" => outcome.as_str())
        .increment(1);
}
