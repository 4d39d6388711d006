//! Integration tests against the real server on port 0. One test binary, so it links once.

mod helpers;

mod admin_audit;
mod admin_import;
mod admin_keys;
mod admin_members;

mod errors;
mod sign_in;
mod smtp;
mod tokens;
