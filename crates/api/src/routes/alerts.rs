//! Alerts: the active ones and their history (`read`), the rules (`admin`: configuration),
//! rules added, changed and removed through the API (`admin`; the config file's stay
//! read-only), and the webhooks' delivery log (`admin`).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mekong_alerts::{Alerts, AlertsError, HistoryQuery, Notice, RuleSource, RuleSpec};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::limit;
use crate::blocking::QueryPool;
use crate::error::{ApiError, ErrorBody};
use crate::{time, AppState};

fn engine(state: &AppState) -> Result<Alerts, ApiError> {
    state.alerts.clone().ok_or_else(|| ApiError::NotFound("alerts are not running on this server".into()))
}

impl From<AlertsError> for ApiError {
    fn from(e: AlertsError) -> Self {
        match e {
            AlertsError::Rule { .. } => ApiError::BadRequest(e.to_string()),
            AlertsError::ReadOnly(_) => ApiError::Conflict(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// One alert that fires now.
#[derive(Serialize, ToSchema)]
pub struct ActiveAlert {
    rule: String,
    device: String,
    /// Empty for a stale-device rule without a metric.
    metric: String,
    /// Always `firing` here.
    state: String,
    /// Reading time it fired at.
    since: String,
    since_ms: i64,
    /// The reading that fired it; null for a stale device.
    value: Option<f64>,
    /// `warning` or `critical`.
    severity: String,
    message: String,
    /// The sequence number of the change that fired it.
    seq: u64,
}

/// `GET /v1/alerts` body.
#[derive(Serialize, ToSchema)]
pub struct ActiveAlerts {
    alerts: Vec<ActiveAlert>,
}

/// `GET /v1/alerts`: every alert that fires now, by rule and device.
#[utoipa::path(get, path = "/v1/alerts", operation_id = "list_alerts", tag = "alerts", responses(
    (status = 200, description = "the alerts that fire now", body = ActiveAlerts),
    (status = 404, description = "alerts are not running on this server", body = ErrorBody),
))]
pub async fn active(State(state): State<AppState>) -> Result<Json<ActiveAlerts>, ApiError> {
    let alerts = engine(&state)?
        .active()
        .into_iter()
        .map(|n| ActiveAlert {
            since: time::format(n.at_ms),
            since_ms: n.at_ms,
            rule: n.rule,
            device: n.device,
            metric: n.metric,
            state: n.state,
            value: n.value,
            severity: n.severity,
            message: n.message,
            seq: n.seq,
        })
        .collect();
    Ok(Json(ActiveAlerts { alerts }))
}

/// One change of an alert.
#[derive(Serialize, ToSchema)]
pub struct AlertChange {
    /// One more for every change, across restarts.
    seq: u64,
    rule: String,
    device: String,
    metric: String,
    /// `firing` or `resolved`.
    state: String,
    /// Reading time of the change.
    at: String,
    at_ms: i64,
    value: Option<f64>,
    severity: String,
    message: String,
}

impl From<Notice> for AlertChange {
    fn from(n: Notice) -> Self {
        AlertChange {
            seq: n.seq,
            at: time::format(n.at_ms),
            at_ms: n.at_ms,
            rule: n.rule,
            device: n.device,
            metric: n.metric,
            state: n.state,
            value: n.value,
            severity: n.severity,
            message: n.message,
        }
    }
}

/// `GET /v1/alerts/history` body.
#[derive(Serialize, ToSchema)]
pub struct AlertHistory {
    changes: Vec<AlertChange>,
}

/// `GET /v1/alerts/history` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Changes at or after this time (RFC 3339 or epoch ms).
    from: Option<String>,
    /// Changes before this time.
    to: Option<String>,
    rule: Option<String>,
    device: Option<String>,
    /// At most this many, the most recent (default 1000, at most 100,000).
    limit: Option<String>,
}

/// `GET /v1/alerts/history?from&to&rule&device&limit`: changes, oldest first.
#[utoipa::path(get, path = "/v1/alerts/history", operation_id = "alert_history", tag = "alerts",
    params(HistoryParams), responses(
    (status = 200, description = "the changes, oldest first", body = AlertHistory),
    (status = 400, description = "a malformed parameter", body = ErrorBody),
    (status = 404, description = "alerts are not running on this server", body = ErrorBody),
    (status = 500, description = "the server failed", body = ErrorBody),
))]
pub async fn history(
    State(state): State<AppState>,
    State(queries): State<QueryPool>,
    query: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Json<AlertHistory>, ApiError> {
    let Query(params) = query?;
    let alerts = engine(&state)?;
    let query = HistoryQuery {
        from_ms: params.from.as_deref().map(|v| time::parse("from", v)).transpose()?,
        to_ms: params.to.as_deref().map(|v| time::parse("to", v)).transpose()?,
        rule: params.rule,
        device: params.device,
        limit: limit(params.limit.as_deref(), 1_000, 100_000)?,
    };
    // A scan of the history in the store: a blocking thread's.
    let changes = queries.run(move || Ok(alerts.history(&query)?)).await?;
    Ok(Json(AlertHistory { changes: changes.into_iter().map(AlertChange::from).collect() }))
}

/// A rule, as written in `[[alerts.rule]]` (without its id, which is the path's, in `PUT`).
/// `type` `threshold`: `above` or `below`, `for_s`, `clear` (default the level) and
/// `clear_for_s`; `rate`: `rise` or `fall` within `within_s`, `clear` (default half);
/// `stale`: `periods` (default 3) of `period_s` (learned from the device's packs if absent).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    /// `threshold`, `rate` or `stale`.
    #[serde(rename = "type")]
    kind_of_rule: String,
    metric: Option<String>,
    device: Option<String>,
    kind: Option<String>,
    above: Option<f64>,
    below: Option<f64>,
    rise: Option<f64>,
    fall: Option<f64>,
    within_s: Option<u64>,
    #[serde(default)]
    for_s: u64,
    clear: Option<f64>,
    #[serde(default)]
    clear_for_s: u64,
    periods: Option<f64>,
    period_s: Option<u64>,
    /// `warning` (default) or `critical`.
    severity: Option<String>,
    /// `{device}`, `{metric}` and `{value}` are replaced.
    #[serde(default)]
    message: String,
}

impl RuleBody {
    fn spec(self, id: String) -> RuleSpec {
        RuleSpec {
            id,
            kind_of_rule: self.kind_of_rule,
            metric: self.metric,
            device: self.device,
            kind: self.kind,
            above: self.above,
            below: self.below,
            rise: self.rise,
            fall: self.fall,
            within_s: self.within_s,
            for_s: self.for_s,
            clear: self.clear,
            clear_for_s: self.clear_for_s,
            periods: self.periods,
            period_s: self.period_s,
            severity: self.severity.unwrap_or_else(|| "warning".into()),
            message: self.message,
        }
    }
}

/// A rule and where it comes from.
#[derive(Serialize, ToSchema)]
pub struct RuleOut {
    id: String,
    /// `config` (read-only here) or `api`.
    source: &'static str,
    #[serde(flatten)]
    rule: RuleBody,
}

impl RuleOut {
    fn new(spec: RuleSpec, source: RuleSource) -> RuleOut {
        let rule = RuleBody {
            kind_of_rule: spec.kind_of_rule,
            metric: spec.metric,
            device: spec.device,
            kind: spec.kind,
            above: spec.above,
            below: spec.below,
            rise: spec.rise,
            fall: spec.fall,
            within_s: spec.within_s,
            for_s: spec.for_s,
            clear: spec.clear,
            clear_for_s: spec.clear_for_s,
            periods: spec.periods,
            period_s: spec.period_s,
            severity: Some(spec.severity),
            message: spec.message,
        };
        let source = match source {
            RuleSource::Config => "config",
            RuleSource::Api => "api",
        };
        RuleOut { id: spec.id, source, rule }
    }
}

/// `GET /v1/alerts/rules` body.
#[derive(Serialize, ToSchema)]
pub struct Rules {
    rules: Vec<RuleOut>,
}

/// `GET /v1/alerts/rules`: the config file's rules, then those added through the API.
#[utoipa::path(get, path = "/v1/alerts/rules", operation_id = "list_alert_rules", tag = "alerts", responses(
    (status = 200, description = "every rule", body = Rules),
    (status = 404, description = "alerts are not running on this server", body = ErrorBody),
))]
pub async fn rules(State(state): State<AppState>) -> Result<Json<Rules>, ApiError> {
    let rules = engine(&state)?.rules().into_iter().map(|(spec, source)| RuleOut::new(spec, source)).collect();
    Ok(Json(Rules { rules }))
}

/// `PUT /v1/alerts/rules/{id}`: adds or replaces a rule; it is kept in the store.
#[utoipa::path(put, path = "/v1/alerts/rules/{id}", operation_id = "put_alert_rule", tag = "alerts",
    params(("id" = String, Path, description = "the rule's id: 1 to 64 letters, digits, '-' or '_'")),
    request_body = RuleBody,
    responses(
        (status = 200, description = "the rule was replaced", body = RuleOut),
        (status = 201, description = "the rule was added", body = RuleOut),
        (status = 400, description = "a malformed body or a rule that cannot be used", body = ErrorBody),
        (status = 404, description = "alerts are not running on this server", body = ErrorBody),
        (status = 409, description = "a rule of the config file has this id", body = ErrorBody),
        (status = 500, description = "the rule could not be stored", body = ErrorBody),
    ),
)]
pub async fn put_rule(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<RuleBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = path?;
    let Json(body) = body?;
    let alerts = engine(&state)?;
    let spec = body.spec(id);
    let out = spec.clone();
    // A store write and flush.
    let created = tokio::task::spawn_blocking(move || alerts.put_rule(spec))
        .await
        .map_err(|e| ApiError::Internal(format!("rule write did not finish: {e}")))??;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(RuleOut::new(out, RuleSource::Api))).into_response())
}

/// `DELETE /v1/alerts/rules/{id}`: removes a rule added through the API; its firing alerts
/// resolve ("rule removed").
#[utoipa::path(delete, path = "/v1/alerts/rules/{id}", operation_id = "delete_alert_rule", tag = "alerts",
    params(("id" = String, Path, description = "the rule's id")),
    responses(
        (status = 204, description = "the rule was removed"),
        (status = 404, description = "no such rule of the API's, or alerts are not running", body = ErrorBody),
        (status = 409, description = "the rule comes from the config file", body = ErrorBody),
        (status = 500, description = "the removal could not be stored", body = ErrorBody),
    ),
)]
pub async fn delete_rule(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = path?;
    let alerts = engine(&state)?;
    let name = id.clone();
    let removed = tokio::task::spawn_blocking(move || alerts.delete_rule(&name))
        .await
        .map_err(|e| ApiError::Internal(format!("rule removal did not finish: {e}")))??;
    match removed {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::NotFound(format!("no rule {id:?} added through the API"))),
    }
}

/// A webhook and what waits in its outbox.
#[derive(Serialize, ToSchema)]
pub struct WebhookOut {
    name: String,
    /// Scheme, host and port of its URL (never its path or query).
    target: String,
    /// Changes not yet taken by the receiver.
    pending: u64,
}

/// One delivery attempt.
#[derive(Serialize, ToSchema)]
pub struct DeliveryOut {
    webhook: String,
    /// The change's sequence number.
    seq: u64,
    /// 1 for the first attempt of this change.
    attempt: u32,
    at: String,
    at_ms: i64,
    /// Whether the receiver took it (a 2xx answer).
    delivered: bool,
    /// The receiver's status, if it answered.
    status: Option<u16>,
    /// Why it failed without an answer.
    error: Option<String>,
    took_ms: u64,
}

/// `GET /v1/alerts/deliveries` body.
#[derive(Serialize, ToSchema)]
pub struct Deliveries {
    webhooks: Vec<WebhookOut>,
    /// The most recent attempts (up to 1,000 since start), newest first.
    deliveries: Vec<DeliveryOut>,
}

/// `GET /v1/alerts/deliveries`: the webhooks, their outboxes and their recent attempts.
#[utoipa::path(get, path = "/v1/alerts/deliveries", operation_id = "alert_deliveries", tag = "alerts", responses(
    (status = 200, description = "webhooks and their recent attempts, newest first", body = Deliveries),
    (status = 404, description = "alerts are not running on this server", body = ErrorBody),
    (status = 500, description = "the server failed", body = ErrorBody),
))]
pub async fn deliveries(
    State(state): State<AppState>,
    State(queries): State<QueryPool>,
) -> Result<Json<Deliveries>, ApiError> {
    let alerts = engine(&state)?;
    let a = alerts.clone();
    let webhooks = queries.run(move || Ok(a.webhooks()?)).await?;
    let webhooks =
        webhooks.into_iter().map(|w| WebhookOut { name: w.name, target: w.target, pending: w.pending }).collect();
    let deliveries = alerts
        .deliveries()
        .into_iter()
        .rev()
        .map(|d| DeliveryOut {
            at: time::format(d.at_ms),
            at_ms: d.at_ms,
            webhook: d.webhook,
            seq: d.seq,
            attempt: d.attempt,
            delivered: d.delivered,
            status: d.status,
            error: d.error,
            took_ms: d.took_ms,
        })
        .collect();
    Ok(Json(Deliveries { webhooks, deliveries }))
}
