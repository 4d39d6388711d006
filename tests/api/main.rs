//! Integration tests against the real server on port 0. One test binary, so it links once.

mod helpers;
mod pg;
mod pg_outage;

mod errors;
mod scale_out;
mod sign_in;
mod smtp;
mod tokens;
