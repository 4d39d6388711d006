//! Pure types of the membership domain. Each type can only be built through a
//! parser, so a value that exists is a valid one; nothing here touches I/O.

mod api_key;
mod email;
mod member;
mod role;
mod rules;
mod secret;
mod signing_alg;

pub use api_key::{ApiKey, prefix_of as api_key_prefix};
pub use email::{Email, EmailError};
pub use member::{Member, MemberId, MemberStatus};
pub use role::{Role, RoleError};
pub use rules::{Conflict, an_admin_remains, may_delete_granted_role, may_delete_role};
pub use secret::{OpaqueToken, SignInCode, TokenHash};
pub use signing_alg::{SigningAlg, UnknownAlg};
