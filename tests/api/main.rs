//! Integration tests against the real server on port 0. One test binary, so it links once.

mod helpers;
mod pg;
mod pg_outage;

mod admin_audit;
mod admin_bulk;
mod admin_import;
mod admin_keys;
mod admin_members;
mod browser;
mod cache_across_instances;
mod console;
mod console_browser;
mod contract;
mod devices;
mod devices_browser;

mod errors;
mod housekeeping;
mod mail;
mod mail_http;
mod mail_support;
mod observability;
mod paging_properties;
mod recovery;
mod scale_out;
mod sign_in;
mod signing_keys;
mod smtp;
mod store;
mod tokens;
mod webhook_receiver;
mod webhooks;
