//! `POST /internal/datastore/reader/get` and `.../get_all` (SPEC 5.1): the
//! live (finalized) models only. Both ride out a short Redis restart
//! (`crate::retry`).

use axum::extract::State;
use axum::Json;
use migration_shared::datastore::{is_valid_collection, Fqid};
use serde_json::{json, Map, Value};

use super::{expect_object, JsonBody};
use crate::error::ApiError;
use crate::retry;
use crate::state::AppState;

/// `{"fqid": "motion/1"}` -> the model's fields plus `meta_position`.
pub async fn get(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let body = expect_object(body, "a string field 'fqid'")?;
    let fqid: Fqid = match body.get("fqid") {
        Some(Value::String(text)) => text.parse().map_err(ApiError::BadRequest)?,
        Some(_) => return Err(ApiError::BadRequest("'fqid' must be a string".into())),
        None => return Err(ApiError::BadRequest("no 'fqid' provided".into())),
    };
    match retry::read("reader/get", || state.datastore.get(&fqid)).await? {
        Some(model) => Ok(Json(json!({"success": true, "model": model.reader_view()}))),
        None => Err(ApiError::NotFound(format!("model {fqid} does not exist"))),
    }
}

/// `{"collection": "motion"}` -> `{"<id>": {...}}` of the live models.
pub async fn get_all(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let body = expect_object(body, "a string field 'collection'")?;
    let collection = match body.get("collection") {
        Some(Value::String(text)) if is_valid_collection(text) => text.clone(),
        Some(Value::String(text)) => {
            return Err(ApiError::BadRequest(format!("invalid collection '{text}'")))
        }
        Some(_) => return Err(ApiError::BadRequest("'collection' must be a string".into())),
        None => return Err(ApiError::BadRequest("no 'collection' provided".into())),
    };
    let models: Map<String, Value> =
        retry::read("reader/get_all", || state.datastore.get_all(&collection))
            .await?
            .into_iter()
            .map(|(id, model)| (id.to_string(), model.reader_view()))
            .collect();
    Ok(Json(json!({"success": true, "models": models})))
}
