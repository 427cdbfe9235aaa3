//! `/v1/*`: reads come from what the agent published; changes are sent to the
//! reconcile loop as runtime operations, which it validates, applies and
//! answers.

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Extension, Json,
};
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::Value as Json_;
use tokio::sync::oneshot;

use super::{error::ApiError, Caller, Shared};
use crate::{
    agent::inbox::{Applied, Reloaded, Request, RequestError},
    config::{field_of, Config, Problem, WEIGHT},
    runtime::{Admin, Op},
};

type Reply<T> = Result<T, ApiError>;

fn parse_object(body: &Bytes) -> Reply<Json_> {
    let value: Json_ = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "the body must be a JSON object"));
    }
    Ok(value)
}

/// A small JSON body as `T`; a refused key is named by its path, as serde
/// walked to it (an unknown key, or one of the wrong type).
fn parse_body<T: DeserializeOwned>(value: Json_) -> Reply<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = match field_of(e.path()) {
            f if f.is_empty() => "body".to_string(),
            f => f,
        };
        let reason = e.inner().to_string();
        ApiError::invalid(format!("{field}: {reason}"), vec![Problem::new(field, "", reason)])
    })
}

async fn ask<T>(
    shared: &Shared,
    make: impl FnOnce(oneshot::Sender<Result<T, RequestError>>) -> Request,
) -> Reply<T> {
    let (tx, rx) = oneshot::channel();
    let gone = || ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the agent is shutting down");
    shared.requests.send(make(tx)).await.map_err(|_| gone())?;
    Ok(rx.await.map_err(|_| gone())??)
}

async fn apply(shared: &Shared, caller: Caller, ops: Vec<Op>) -> Reply<Applied> {
    ask(shared, |reply| Request::Apply { ops, caller, reply }).await
}

/// Who sent the request: the listener puts it in every request's extensions.
type Origin = Option<Extension<Caller>>;

fn caller(from: Origin) -> Caller {
    from.map_or(Caller::Internal, |Extension(c)| c)
}

/// A VIP as configured, each backend with its admin state beside its config keys.
fn vip_json(applied: &Applied, name: &str) -> Reply<Json_> {
    let vip = applied.config.vips.iter().find(|v| v.name == name);
    let vip = vip.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no VIP named {name:?}")))?;
    let mut json = serde_json::to_value(vip)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // `get_mut`: indexing a missing key would insert a null.
    for b in json.get_mut("backend").and_then(|b| b.as_array_mut()).into_iter().flatten() {
        let admin = applied.admin.get(&vip.name, b["name"].as_str().unwrap_or_default());
        b["admin"] = serde_json::to_value(admin).unwrap_or_default();
    }
    Ok(json)
}

pub async fn stats(State(shared): State<Shared>) -> Response {
    let snapshot = shared.stats.borrow().clone();
    Json(&*snapshot).into_response()
}

pub async fn list_vips(State(shared): State<Shared>) -> Reply<Json<Vec<Json_>>> {
    let applied = shared.config.borrow().clone();
    applied.config.vips.iter().map(|v| vip_json(&applied, &v.name)).collect::<Reply<_>>().map(Json)
}

pub async fn get_vip(State(shared): State<Shared>, Path(vip): Path<String>) -> Reply<Json<Json_>> {
    vip_json(&shared.config.borrow(), &vip).map(Json)
}

pub async fn add_vip(
    State(shared): State<Shared>,
    from: Origin,
    body: Bytes,
) -> Reply<(StatusCode, Json<Json_>)> {
    let vip = parse_object(&body)?;
    let applied = apply(&shared, caller(from), vec![Op::AddVip { vip }]).await?;
    let added = applied.config.vips.last().map(|v| v.name.clone()).unwrap_or_default();
    Ok((StatusCode::CREATED, Json(vip_json(&applied, &added)?)))
}

pub async fn remove_vip(
    State(shared): State<Shared>,
    from: Origin,
    Path(vip): Path<String>,
) -> Reply<StatusCode> {
    apply(&shared, caller(from), vec![Op::RemoveVip { vip }]).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn backend_json(config: &Config, vip: &str, backend: &str) -> Reply<Json_> {
    let vip = config.vips.iter().find(|v| v.name == vip);
    let found = vip.and_then(|v| v.backends.iter().find(|b| b.name == backend));
    let found =
        found.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no backend named {backend:?}")))?;
    serde_json::to_value(found).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

pub async fn add_backend(
    State(shared): State<Shared>,
    from: Origin,
    Path(vip): Path<String>,
    body: Bytes,
) -> Reply<(StatusCode, Json<Json_>)> {
    let backend = parse_object(&body)?;
    let config =
        apply(&shared, caller(from), vec![Op::AddBackend { vip: vip.clone(), backend }]).await?.config;
    let added =
        config.vips.iter().find(|v| v.name == vip).and_then(|v| v.backends.last()).map(|b| b.name.clone());
    Ok((StatusCode::CREATED, Json(backend_json(&config, &vip, &added.unwrap_or_default())?)))
}

pub async fn remove_backend(
    State(shared): State<Shared>,
    from: Origin,
    Path((vip, backend)): Path<(String, String)>,
) -> Reply<StatusCode> {
    apply(&shared, caller(from), vec![Op::RemoveBackend { vip, backend }]).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PATCH` body: either or both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    weight: Option<Json_>,
    admin: Option<Json_>,
}

pub async fn patch_backend(
    State(shared): State<Shared>,
    from: Origin,
    Path((vip, backend)): Path<(String, String)>,
    body: Bytes,
) -> Reply<Json<Json_>> {
    let value = parse_object(&body)?;
    let patch: Patch = parse_body(value)?;
    let mut ops = Vec::new();
    if let Some(weight) = patch.weight {
        let weight = weight.as_i64().ok_or_else(|| {
            ApiError::invalid(
                "weight must be an integer",
                vec![Problem::new("weight", weight.to_string(), format!("must be an integer {WEIGHT:?}"))],
            )
        })?;
        ops.push(Op::SetWeight { vip: vip.clone(), backend: backend.clone(), weight });
    }
    if let Some(admin) = patch.admin {
        let state = serde_json::from_value::<Admin>(admin.clone()).map_err(|_| {
            ApiError::invalid(
                "admin must be ready, drain or maint",
                vec![Problem::new("admin", admin.to_string(), "must be \"ready\", \"drain\" or \"maint\"")],
            )
        })?;
        ops.push(Op::SetAdmin { vip: vip.clone(), backend: backend.clone(), admin: state });
    }
    if ops.is_empty() {
        return Err(ApiError::invalid("nothing to change: give weight and/or admin", Vec::new()));
    }
    let applied = apply(&shared, caller(from), ops).await?;
    let mut body = backend_json(&applied.config, &vip, &backend)?;
    let admin = applied.admin.get(&vip, &backend);
    body["admin"] = serde_json::to_value(admin).unwrap_or_default();
    Ok(Json(body))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadBody {
    #[serde(default)]
    discard_runtime: bool,
}

pub async fn reload(State(shared): State<Shared>, from: Origin, body: Bytes) -> Reply<Json<Reloaded>> {
    let request: ReloadBody = if body.iter().all(u8::is_ascii_whitespace) {
        ReloadBody::default()
    } else {
        parse_body(parse_object(&body)?)?
    };
    let outcome = ask(&shared, |reply| Request::Reload {
        discard_runtime: request.discard_runtime,
        caller: caller(from),
        reply,
    })
    .await?;
    Ok(Json(outcome))
}
