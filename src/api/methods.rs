//! `405 Method Not Allowed` with an `Allow` header, answered before anything
//! else looks at the request.
//!
//! poem-openapi answers a method a path does not have only after the other
//! middleware ran, so a `POST` to a GET-only path met the body checks first
//! (415 for a missing content type) and a 405 carried no `Allow`. The table
//! here is read from the spec's own operations, so it cannot drift from them.
//!
//! In debug builds (the tests, the fuzzer's server) the same table holds each
//! operation's listed statuses, and an answer with a status the spec does not
//! list becomes a 500 `undocumented_status`: the whole test suite checks the
//! spec's response lists (`responses.rs`) that way.

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
    /// Each method's listed statuses (HEAD has GET's).
    statuses: Statuses,
}

/// The statuses the spec lists, for each method of one path.
type Statuses = Vec<(Method, Vec<u16>)>;

impl AllowedMethods {
    /// The table for the operations of `T`.
    pub fn of<T: OpenApi>() -> Self {
        // Several API structs may share a path (GET and POST of one
        // collection in two files): their methods add up.
        let mut paths: Vec<(String, Statuses)> = Vec::new();
        for path in T::meta().into_iter().flat_map(|api| api.paths) {
            let operations = path.operations.iter().map(|op| {
                let statuses = op.responses.responses.iter().filter_map(|r| r.status);
                (op.method.clone(), statuses.collect())
            });
            match paths.iter_mut().find(|(p, _)| *p == path.path) {
                Some((_, known)) => known.extend(operations),
                None => paths.push((path.path, operations.collect())),
            }
        }
        let mut templates = Vec::new();
        for (path, mut statuses) in paths {
            // poem answers HEAD wherever GET is answered, as GET would.
            if let Some((_, get)) = statuses.iter().find(|(m, _)| m == Method::GET) {
                statuses.push((Method::HEAD, get.clone()));
            }
            let mut methods: Vec<Method> = statuses.iter().map(|(m, _)| m.clone()).collect();
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
                statuses,
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
    let template = table.route(req.uri().path());
    if let Some(template) = template
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
    // What was asked, for the debug builds' check (a release build skips it).
    let asked = (cfg!(debug_assertions) && template.is_some())
        .then(|| (req.method().clone(), req.uri().path().to_owned()));
    let answer = next.call(req).await.map(IntoResponse::into_response);
    if let (Some(template), Some((method, path))) = (template, asked)
        && let Some(undocumented) = template.undocumented(&method, &path, &answer)
    {
        return Ok(undocumented);
    }
    answer
}

impl Template {
    /// A 500 in place of `answer` when the spec does not list its status for
    /// `method` (checked in debug builds only; see the module doc).
    fn undocumented(
        &self,
        method: &Method,
        path: &str,
        answer: &poem::Result<Response>,
    ) -> Option<Response> {
        let status = match answer {
            Ok(response) => response.status(),
            Err(err) => err.status(),
        };
        let (_, listed) = self.statuses.iter().find(|(m, _)| m == method)?;
        if listed.contains(&status.as_u16()) {
            return None;
        }
        let detail = format!("{method} {path} answered {status}, which the spec does not list");
        tracing::error!(%detail, "undocumented status");
        let status = StatusCode::INTERNAL_SERVER_ERROR;
        Some(problem_response(&problem(
            status,
            "undocumented_status",
            Some(detail),
        )))
    }
}
