//! The error statuses each operation lists in the spec, each with its
//! problem+json body.
//!
//! Every handler returns [`ApiError`](crate::error::ApiError), whose one
//! response is the spec's `default`: true, but it tells a client nothing and
//! lets a fuzzer accept any status. A status an operation can answer follows
//! either from its shape (a body can be too large, a path id can be unknown,
//! a credential can be wrong) or from what it does (a role in use is a 409):
//! the first kind is derived here from the operation itself, the second is
//! [`STATE_STATUSES`], one line per operation. A test checks that every
//! operation has its line, so a new one cannot go undocumented.

use std::collections::HashMap;

use poem::endpoint::BoxEndpoint;
use poem::http::Method;
use poem_openapi::OpenApi;
use poem_openapi::registry::{
    MetaApi, MetaHeader, MetaMediaType, MetaOperation, MetaParamIn, MetaResponse, MetaSchema,
    MetaSchemaRef, Registry,
};
use poem_openapi::types::Type;

use crate::error::{PROBLEM_JSON, Problem};

/// The statuses an operation answers because of what it does, beyond those
/// its shape gives it (see [`shape_statuses`]): `(method, path, statuses)`.
/// 401 here is a sign-in credential of the request body (`invalid_link`);
/// 403 a policy (`redirect_not_allowed`, a webhook URL gatehouse will not
/// call, a token minted from an API key deleting its member); 404 a feature
/// that is switched off, or a filter naming what does not exist; 422 a field
/// the domain refuses.
const STATE_STATUSES: &[(&str, &str, &[u16])] = &[
    ("POST", "/v1/auth/magic-link", &[403, 422, 429]),
    ("POST", "/v1/auth/magic-link/status", &[401]),
    ("POST", "/v1/auth/verify", &[401, 422, 429]),
    ("POST", "/v1/auth/refresh", &[401]),
    ("POST", "/v1/auth/logout", &[]),
    ("POST", "/v1/auth/eligibility", &[404, 422, 429]),
    ("POST", "/v1/auth/token", &[]),
    ("GET", "/v1/me", &[]),
    ("DELETE", "/v1/me", &[403, 409]),
    ("GET", "/v1/me/sessions", &[]),
    ("DELETE", "/v1/me/sessions/{id}", &[]),
    ("POST", "/v1/me/sessions/revoke-others", &[]),
    ("POST", "/v1/admin/eligible-emails/bulk", &[422]),
    ("GET", "/v1/admin/outbox", &[]),
    ("POST", "/v1/admin/outbox/{id}/retry", &[409]),
    ("POST", "/v1/admin/eligible-emails", &[409, 422]),
    ("GET", "/v1/admin/eligible-emails", &[422]),
    ("POST", "/v1/admin/eligible-emails/import", &[409, 422]),
    ("GET", "/v1/admin/eligible-emails/export", &[422]),
    ("DELETE", "/v1/admin/eligible-emails/{email}", &[422]),
    ("GET", "/v1/admin/batches", &[]),
    ("DELETE", "/v1/admin/batches/{id}", &[422]),
    ("GET", "/v1/admin/members", &[422]),
    ("POST", "/v1/admin/members", &[409, 422]),
    ("GET", "/v1/admin/members/export", &[422]),
    ("GET", "/v1/admin/members/{id}", &[]),
    ("PATCH", "/v1/admin/members/{id}", &[409, 422]),
    ("DELETE", "/v1/admin/members/{id}", &[409]),
    ("PUT", "/v1/admin/members/{id}/roles", &[409, 422]),
    ("POST", "/v1/admin/members/{id}/roles", &[409, 422]),
    ("DELETE", "/v1/admin/members/{id}/roles/{role}", &[409, 422]),
    ("POST", "/v1/admin/members/{id}/sessions/revoke", &[]),
    ("GET", "/v1/admin/roles", &[]),
    ("POST", "/v1/admin/roles", &[409, 422]),
    ("DELETE", "/v1/admin/roles/{name}", &[409, 422]),
    ("POST", "/v1/admin/members/{id}/api-keys", &[409, 422]),
    ("GET", "/v1/admin/api-keys", &[404]),
    ("DELETE", "/v1/admin/api-keys/{id}", &[]),
    ("GET", "/v1/admin/audit", &[]),
    ("GET", "/v1/admin/audit/export", &[]),
    ("POST", "/v1/admin/webhooks", &[403, 422]),
    ("GET", "/v1/admin/webhooks", &[]),
    ("GET", "/v1/admin/webhooks/{id}", &[]),
    ("PATCH", "/v1/admin/webhooks/{id}", &[403, 422]),
    ("DELETE", "/v1/admin/webhooks/{id}", &[]),
    ("POST", "/v1/admin/webhooks/{id}/rotate-secret", &[]),
    ("GET", "/v1/admin/webhooks/{id}/deliveries", &[]),
    (
        "POST",
        "/v1/admin/webhooks/{id}/deliveries/{delivery}/retry",
        &[409],
    ),
    ("GET", "/v1/admin/signing-keys", &[]),
    ("POST", "/v1/admin/signing-keys/rotate", &[409]),
    ("DELETE", "/v1/admin/signing-keys/{kid}", &[409]),
    ("GET", "/readyz", &[]),
];

/// The statuses any operation of this shape can answer, whatever it does.
fn shape_statuses(path: &str, op: &MetaOperation) -> Vec<u16> {
    let mut statuses = vec![500, 503];
    if !op.params.is_empty() || op.request.is_some() {
        statuses.push(400);
    }
    if !op.security.is_empty() {
        statuses.push(401);
    }
    if path.starts_with("/v1/admin/") {
        statuses.push(403);
    }
    if op.params.iter().any(|p| p.in_type == MetaParamIn::Path) {
        statuses.push(404);
    }
    if op.request.is_some() {
        statuses.extend([413, 415]);
    }
    // A wrong API key counts against the client's address, and past the limit
    // every key it sends is refused until the window ends.
    let takes_api_key = op
        .security
        .iter()
        .flat_map(|scheme| scheme.keys())
        .any(|name| name.starts_with("ApiKey"));
    if takes_api_key {
        statuses.push(429);
    }
    statuses
}

/// The error statuses `method path` lists: its shape's and its own, sorted.
/// `None` for an operation [`STATE_STATUSES`] does not know.
fn error_statuses(path: &str, op: &MetaOperation) -> Option<Vec<u16>> {
    let (.., own) = STATE_STATUSES
        .iter()
        .find(|(method, known, _)| *method == op.method.as_str() && *known == path)?;
    let mut statuses = shape_statuses(path, op);
    statuses.extend_from_slice(own);
    statuses.sort_unstable();
    statuses.dedup();
    Some(statuses)
}

fn description(status: u16) -> &'static str {
    match status {
        400 => {
            "The request does not have the form the spec states (`invalid_body`, `invalid_parameter`)"
        }
        401 => {
            "No credential, an invalid one, or two (`multiple_credentials`); for sign-in, a used or expired link or code (`invalid_link`)"
        }
        403 => {
            "The credential lacks the role, or a policy refuses the request (`forbidden`, `redirect_not_allowed`, `url_not_https`…)"
        }
        404 => "No such resource (`not_found`)",
        409 => {
            "Refused by the current state (`unknown_role`, `last_admin`, `self_action`, `role_not_held`…)"
        }
        413 => "The request body is over the limit (`body_too_large`)",
        415 => "The body's content type is not one the operation takes (`unsupported_media_type`)",
        422 => "A field's value is refused (`invalid_email`, `invalid_role`, `invalid_batch_id`…)",
        429 => "Too many requests; `Retry-After` says when to try again (`rate_limited`)",
        500 => "An internal error; `request_id` finds it in the server's log (`internal`)",
        503 => "The database is unavailable or busy; try again (`unavailable`)",
        _ => "An RFC 9457 problem document",
    }
}

fn header(name: &str, description: &str, schema: &'static str) -> MetaHeader {
    MetaHeader {
        name: name.to_owned(),
        description: Some(description.to_owned()),
        required: true,
        deprecated: false,
        schema: MetaSchemaRef::Inline(Box::new(MetaSchema::new(schema))),
    }
}

fn problem_response(status: u16) -> MetaResponse {
    let headers = match status {
        401 => vec![header(
            "WWW-Authenticate",
            "The scheme to authenticate with",
            "string",
        )],
        429 => vec![header(
            "Retry-After",
            "Seconds until the request may succeed",
            "integer",
        )],
        _ => vec![],
    };
    MetaResponse {
        description: description(status),
        status: Some(status),
        status_range: None,
        content: vec![MetaMediaType {
            content_type: PROBLEM_JSON,
            schema: MetaSchemaRef::Reference(Problem::name().into_owned()),
        }],
        headers,
    }
}

/// Replaces an operation's `default` problem response with one per status it lists.
fn document(path: &str, op: &mut MetaOperation) {
    let has_default = op.responses.responses.iter().any(|r| r.status.is_none());
    // Unknown operations keep their `default`; the test names them.
    let (true, Some(statuses)) = (has_default, error_statuses(path, op)) else {
        return;
    };
    op.responses.responses.retain(|r| r.status.is_some());
    op.responses
        .responses
        .extend(statuses.into_iter().map(problem_response));
}

/// `T` with each operation's error statuses listed (see the module doc).
pub struct Documented<T>(pub T);

impl<T: OpenApi> OpenApi for Documented<T> {
    fn meta() -> Vec<MetaApi> {
        let mut apis = T::meta();
        for path in apis.iter_mut().flat_map(|api| api.paths.iter_mut()) {
            let template = openapi_path(&path.path);
            for op in &mut path.operations {
                document(&template, op);
            }
        }
        apis
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn add_routes(self, routes: &mut HashMap<String, HashMap<Method, BoxEndpoint<'static>>>) {
        self.0.add_routes(routes);
    }
}

/// `/members/:id` as the spec writes it, `/members/{id}`.
fn openapi_path(path: &str) -> String {
    path.split('/')
        .map(|segment| match segment.strip_prefix(':') {
            Some(name) => format!("{{{name}}}"),
            None => segment.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Apis;

    #[test]
    fn every_operation_with_errors_has_its_line_and_every_line_an_operation() {
        let mut seen = Vec::new();
        for path in Apis::meta().into_iter().flat_map(|api| api.paths) {
            let template = openapi_path(&path.path);
            for op in &path.operations {
                if op.responses.responses.iter().any(|r| r.status.is_none()) {
                    assert!(
                        error_statuses(&template, op).is_some(),
                        "{} {template} is not in STATE_STATUSES",
                        op.method
                    );
                }
                seen.push((op.method.to_string(), template.clone()));
            }
        }
        for (method, path, _) in STATE_STATUSES {
            assert!(
                seen.iter().any(|(m, p)| m == method && p == path),
                "STATE_STATUSES names {method} {path}, which is not an operation"
            );
        }
    }

    #[test]
    fn the_spec_lists_statuses_not_a_default() {
        let spec: serde_json::Value =
            serde_json::from_str(&crate::api::spec("http://localhost")).unwrap();
        let member = &spec["paths"]["/v1/admin/members/{id}"]["patch"]["responses"];
        let listed: Vec<&str> = member
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            listed,
            [
                "200", "400", "401", "403", "404", "409", "413", "415", "422", "429", "500", "503"
            ]
        );
        assert_eq!(
            member["429"]["headers"]["Retry-After"]["required"],
            serde_json::Value::Bool(true)
        );
        let logout = &spec["paths"]["/v1/auth/logout"]["post"]["responses"];
        let listed: Vec<&str> = logout
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(listed, ["204", "401", "500", "503"]);
    }
}
