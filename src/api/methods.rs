//! `405 Method Not Allowed` with an `Allow` header, answered before anything
//! else looks at the request.
//!
//! poem-openapi answers a method a path does not have only after the other
//! middleware ran, so a `POST` to a GET-only path met the body checks first
//! (415 for a missing content type) and a 405 carried no `Allow`. The table
//! here is read from the spec's own operations, so it cannot drift from them.

use std::sync::Arc;

use poem::http::{HeaderValue, Method, StatusCode, header};
use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::OpenApi;

use crate::error::{problem, problem_response};

/// Every path template of the API with the methods it answers.
#[derive(Debug, Clone)]
pub struct AllowedMethods(Arc<[Template]>);

#[derive(Debug)]
struct Template {
    /// `None` for a `{parameter}` segment, which matches any one segment.
    segments: Vec<Option<String>>,
    /// The `Allow` header's value, e.g. `GET, HEAD, POST`.
    allow: HeaderValue,
    methods: Vec<Method>,
}

impl AllowedMethods {
    /// The table for the operations of `T`.
    pub fn of<T: OpenApi>() -> Self {
        // Several API structs may share a path (GET and POST of one
        // collection in two files): their methods add up.
        let mut paths: Vec<(String, Vec<Method>)> = Vec::new();
        for path in T::meta().into_iter().flat_map(|api| api.paths) {
            let methods = path.operations.iter().map(|op| op.method.clone());
            match paths.iter_mut().find(|(p, _)| *p == path.path) {
                Some((_, known)) => known.extend(methods),
                None => paths.push((path.path, methods.collect())),
            }
        }
        let mut templates = Vec::new();
        for (path, mut methods) in paths {
            // poem answers HEAD wherever GET is answered.
            if methods.contains(&Method::GET) {
                methods.push(Method::HEAD);
            }
            methods.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            methods.dedup();
            let allow = methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            templates.push(Template {
                segments: segments(&path)
                    .map(|s| {
                        let parameter = s.starts_with('{') || s.starts_with(':');
                        (!parameter).then(|| s.to_owned())
                    })
                    .collect(),
                allow: HeaderValue::from_str(&allow).unwrap_or(HeaderValue::from_static("")),
                methods,
            });
        }
        Self(templates.into())
    }

    /// The template `path` is routed to: of those that match, the one with the
    /// most literal segments (`/members/export` before `/members/{id}`), as poem routes.
    fn route(&self, path: &str) -> Option<&Template> {
        let given: Vec<&str> = segments(path).collect();
        self.0
            .iter()
            .filter(|t| {
                t.segments.len() == given.len()
                    && t.segments
                        .iter()
                        .zip(&given)
                        .all(|(want, got)| want.as_deref().is_none_or(|w| w == *got))
            })
            .max_by_key(|t| t.segments.iter().filter(|s| s.is_some()).count())
    }
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// Answers 405 with `Allow` for a known path asked with a method it does not
/// have; everything else goes on to `next` (an unknown path to its 404).
pub async fn refuse_other_methods<E: Endpoint>(
    next: Arc<E>,
    req: Request,
    table: AllowedMethods,
) -> poem::Result<Response> {
    if let Some(template) = table.route(req.uri().path())
        && !template.methods.contains(req.method())
    {
        let status = StatusCode::METHOD_NOT_ALLOWED;
        let detail = format!(
            "{} is not supported here; allowed: {}",
            req.method(),
            template.allow.to_str().unwrap_or_default()
        );
        let mut response = problem_response(&problem(status, "method_not_allowed", Some(detail)));
        response
            .headers_mut()
            .insert(header::ALLOW, template.allow.clone());
        return Ok(response);
    }
    Ok(next.call(req).await?.into_response())
}
