//! `/admin/roster`: upload a roster CSV (a dry run first, then the import),
//! download its invalid rows, see and withdraw batches, search the allowlist
//! and remove one address.
//!
//! An upload is kept in the database between its dry run and its import
//! (`staged_uploads`), so the admin sends the file once and any instance can
//! take the next step; only the admin who sent it can use it.

use std::io::Cursor;
use std::sync::Arc;

use poem::http::{StatusCode, header};
use poem::web::{Data, Multipart, Path, Query};
use poem::{Request, Response, handler};
use serde::Deserialize;

use super::page::{self, Flash, FormFields};
use super::{BrowserSession, Console};
use crate::domain::Email;
use crate::import::{self, ImportContext, ImportReport};
use crate::store::{EligibleFilter, StagedUpload};

const BATCHES_SHOWN: i64 = 20;
const ENTRIES_PAGE: i64 = 50;

#[derive(Deserialize)]
pub struct RosterQuery {
    q: Option<String>,
    after: Option<String>,
}

#[handler]
pub async fn show(
    req: &Request,
    Query(query): Query<RosterQuery>,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
) -> Response {
    let q = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let filter = EligibleFilter {
        batch_id: None,
        q: q.map(str::to_lowercase),
        claimed: None,
        after: query.after.clone().filter(|a| !a.is_empty()),
        limit: ENTRIES_PAGE,
    };
    let (batches, entries) = match tokio::try_join!(
        console.store.list_batches(None, BATCHES_SHOWN),
        console.store.list_eligible(&filter),
    ) {
        Ok(found) => found,
        Err(error) => return page::unavailable(&console, req, &error),
    };
    let next = (entries.len() as i64 == ENTRIES_PAGE)
        .then(|| entries.last().map(|e| e.email.clone()))
        .flatten();
    let context = minijinja::context! {
        batches => batches.iter().map(|b| minijinja::context! {
            id => b.id, source => b.source, created_at => b.created_at, rows => b.rows,
            added => b.added, updated => b.updated, duplicates => b.duplicates, invalid => b.invalid,
            remaining => b.remaining, withdrawn_at => b.withdrawn_at,
        }).collect::<Vec<_>>(),
        entries => entries.iter().map(|e| minijinja::context! {
            email => e.email,
            roles => e.roles.split(',').filter(|r| !r.is_empty()).collect::<Vec<_>>(),
            created_at => e.created_at,
            claimed => e.claimed_by.is_some(),
        }).collect::<Vec<_>>(),
        q => q,
        filters => page::query_string(&[("q", &q.map(str::to_owned))]),
        next => next,
        first_page => filter.after.is_none(),
        max_upload_mib => console.max_upload_bytes / (1 << 20),
    };
    page::render(
        &console,
        req,
        Some(&session),
        StatusCode::OK,
        "console/roster.html",
        context,
    )
}

/// Keeps an uploaded file and shows its dry run. The multipart body carries the
/// CSRF token first, then the file.
#[handler]
pub async fn receive(
    req: &Request,
    mut body: Multipart,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
) -> Response {
    let mut token_ok = false;
    let mut file = None;
    loop {
        let field = match body.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(_) => {
                return upload_failed(
                    &console,
                    "The upload was cut off or is larger than allowed. Nothing was imported.",
                );
            }
        };
        match field.name() {
            Some("csrf") => {
                let value = field.text().await.unwrap_or_default();
                token_ok = console
                    .keys(session.door)
                    .csrf_matches(&session.principal.session_id, value.trim());
            }
            Some("file") if token_ok => {
                let name = field.file_name().unwrap_or("roster.csv").to_owned();
                match field.bytes().await {
                    Ok(bytes) => file = Some((name, bytes)),
                    Err(_) => {
                        return upload_failed(
                            &console,
                            "The upload was cut off or is larger than allowed. Nothing was imported.",
                        );
                    }
                }
            }
            _ => {}
        }
    }
    if !token_ok {
        return page::refusal(&console, req, page::Refusal::BadToken);
    }
    let Some((filename, bytes)) = file.filter(|(_, bytes)| !bytes.is_empty()) else {
        return upload_failed(&console, "Choose a CSV file to upload.");
    };
    let upload = StagedUpload {
        id: uuid::Uuid::new_v4().to_string(),
        created_by: session.principal.member.id.to_string(),
        filename: filename.chars().take(200).collect(),
        body: bytes,
        created_at: console.clock.now(),
    };
    if let Err(error) = console.store.stage_upload(&upload).await {
        return page::unavailable(&console, req, &error);
    }
    page::redirect(
        &console,
        &format!("/admin/roster/uploads/{}", upload.id),
        None,
    )
}

fn upload_failed(console: &Console, message: &str) -> Response {
    page::redirect(console, "/admin/roster", Some(Flash::error(message)))
}

/// The admin's own staged upload, or the answer to give instead.
async fn staged(
    console: &Console,
    req: &Request,
    session: &BrowserSession,
    id: &str,
) -> Result<StagedUpload, Response> {
    match console.store.staged_upload(id).await {
        Ok(Some(upload)) if upload.created_by == session.principal.member.id.as_str() => Ok(upload),
        Ok(_) => Err(page::redirect(
            console,
            "/admin/roster",
            Some(Flash::error(
                "That upload is gone: it was imported already, or is more than a day old. Upload the file again.",
            )),
        )),
        Err(error) => Err(page::unavailable(console, req, &error)),
    }
}

fn context(console: &Console, session: &BrowserSession, dry_run: bool) -> ImportContext {
    let actor = session.actor();
    ImportContext {
        batch_id: import::new_batch_id(),
        source: "console",
        actor: Some(actor.id),
        ip: actor.ip,
        dry_run,
        now: console.clock.now(),
    }
}

/// The dry run: exactly what the import would do, with nothing written.
#[handler]
pub async fn check_upload(
    req: &Request,
    Path(id): Path<String>,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
) -> Response {
    let upload = match staged(&console, req, &session, &id).await {
        Ok(upload) => upload,
        Err(response) => return response,
    };
    let reader = Cursor::new(upload.body);
    let outcome =
        import::import_csv(&console.store, reader, context(&console, &session, true)).await;
    let (status, report, problem) = match outcome {
        Ok(outcome) => (StatusCode::OK, Some(report_view(&outcome)), None),
        Err(error) => {
            let (status, message) = page::explain(error);
            (status, None, Some(message))
        }
    };
    let context = minijinja::context! {
        id => upload.id,
        filename => upload.filename,
        report => report,
        problem => problem,
    };
    page::render(
        &console,
        req,
        Some(&session),
        status,
        "console/roster_report.html",
        context,
    )
}

fn report_view(outcome: &ImportReport) -> minijinja::Value {
    minijinja::context! {
        rows => outcome.rows,
        added => outcome.added,
        updated => outcome.updated,
        unchanged => outcome.unchanged,
        duplicates => outcome.duplicates,
        invalid_total => outcome.invalid_total,
        invalid => outcome.invalid.iter().map(|row| minijinja::context! {
            line => row.line, value => row.value, reason => row.reason,
        }).collect::<Vec<_>>(),
        more_invalid => outcome.invalid_total > outcome.invalid.len() as u64,
    }
}

/// Writes the staged upload to the allowlist, as one batch.
#[handler]
pub async fn import_upload(
    req: &Request,
    Path(id): Path<String>,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
) -> Response {
    let upload = match staged(&console, req, &session, &id).await {
        Ok(upload) => upload,
        Err(response) => return response,
    };
    let reader = Cursor::new(upload.body);
    match import::import_csv(&console.store, reader, context(&console, &session, false)).await {
        Ok(done) => {
            if let Err(error) = console.store.discard_upload(&id).await {
                tracing::warn!(%error, "an imported upload stays staged until housekeeping removes it");
            }
            let message = format!(
                "Imported {}: {} added, {} updated, {} unchanged, {} duplicate(s), {} invalid row(s) left out.",
                upload.filename,
                done.added,
                done.updated,
                done.unchanged,
                done.duplicates,
                done.invalid_total
            );
            page::redirect(&console, "/admin/roster", Some(Flash::ok(message)))
        }
        Err(error) => page::failed(&console, &format!("/admin/roster/uploads/{id}"), error),
    }
}

/// The rows the import leaves out, as a CSV to fix and upload again: the
/// address and roles as they were, then the line and the reason (an import
/// reads only the `email` and `roles` columns, so the extra two are ignored).
#[handler]
pub async fn invalid_rows(
    req: &Request,
    Path(id): Path<String>,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
) -> Response {
    let upload = match staged(&console, req, &session, &id).await {
        Ok(upload) => upload,
        Err(response) => return response,
    };
    let rows = match import::invalid_rows(&console.store, Cursor::new(upload.body)).await {
        Ok(rows) => rows,
        Err(error) => return page::failed(&console, &format!("/admin/roster/uploads/{id}"), error),
    };
    let mut out = csv::Writer::from_writer(Vec::new());
    let mut write = || -> csv::Result<Vec<u8>> {
        out.write_record(["email", "roles", "line", "reason"])?;
        for (row, reason) in &rows {
            let line = row.line.to_string();
            // One cell, in a form the import reads back.
            let roles = row.roles.as_deref().unwrap_or_default().join(";");
            out.write_record([row.email.as_str(), &roles, &line, reason])?;
        }
        out.flush()?;
        Ok(out.get_ref().clone())
    };
    let Ok(bytes) = write() else {
        return page::failed(
            &console,
            "/admin/roster",
            crate::error::ApiError::Internal("writing a CSV in memory".into()),
        );
    };
    let stem = upload.filename.trim_end_matches(".csv");
    let name: String = format!("{stem}-invalid-rows.csv")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .collect();
    Response::builder()
        .content_type("text/csv; charset=utf-8")
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        )
        .header(header::CACHE_CONTROL, "no-store")
        .body(bytes)
}

#[handler]
pub async fn withdraw(
    Path(id): Path<String>,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
) -> Response {
    let outcome = console.admin.withdraw_batch(&session.actor(), &id).await;
    let said = outcome.map(|removed| {
        format!("Withdrew the batch: {removed} unclaimed address(es) removed. Members it made stay members.")
    });
    page::after(&console, "/admin/roster", said)
}

#[handler]
pub async fn remove(
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
    form: Data<&FormFields>,
) -> Response {
    let email = match Email::parse(form.get("email").unwrap_or_default()) {
        Ok(email) => email,
        Err(error) => {
            return page::failed(
                &console,
                "/admin/roster",
                crate::error::ApiError::from(error),
            );
        }
    };
    let outcome = console
        .admin
        .remove_eligible(&session.actor(), &email)
        .await;
    let said = outcome.map(|()| format!("Removed {} from the allowlist.", email.as_str()));
    page::after(&console, "/admin/roster", said)
}
