use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::ApiTags;
use crate::app::AppState;
use crate::error::ApiError;

pub struct HealthApi;

#[derive(Object)]
pub struct HealthStatus {
    /// `ok`
    pub status: String,
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness: the process is up and serving.
    #[oai(path = "/healthz", method = "get")]
    async fn healthz(&self) -> Json<HealthStatus> {
        Json(HealthStatus {
            status: "ok".into(),
        })
    }

    /// Readiness: the database answers. A 503 while it does not.
    #[oai(path = "/readyz", method = "get")]
    async fn readyz(&self, state: Data<&Arc<AppState>>) -> Result<Json<HealthStatus>, ApiError> {
        state.store.ping().await?;
        Ok(Json(HealthStatus {
            status: "ok".into(),
        }))
    }
}
