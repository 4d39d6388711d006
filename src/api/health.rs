use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::ApiTags;
use crate::error::ApiError;
use crate::store::DynStore;

pub struct HealthApi {
    pub store: DynStore,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
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
    async fn readyz(&self) -> Result<Json<HealthStatus>, ApiError> {
        self.store.ping().await?;
        Ok(Json(HealthStatus {
            status: "ok".into(),
        }))
    }
}
