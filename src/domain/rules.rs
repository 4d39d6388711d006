//! The rules that keep a membership administrable, and the conflicts a change
//! that breaks one of them is refused with. They are checked where the change
//! is made atomic (inside the store's transaction, or before it in `admin/`),
//! but they are defined here, once.

use super::{Email, Role};

/// Why a change cannot be made in the state things are in now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// The change would leave no active member with the `admin` role.
    #[error("the last active admin cannot lose the admin role")]
    LastAdmin,
    #[error("`{0}` is a built-in role")]
    BuiltinRole(Role),
    #[error("the role `{role}` is granted {grants} time(s)")]
    RoleInUse { role: Role, grants: i64 },
    #[error("the role `{0}` exists already")]
    RoleExists(Role),
    #[error("unknown role `{0}`")]
    UnknownRole(Role),
    #[error("{0} is already a member")]
    AlreadyMember(Email),
    /// A deleted member stays deleted: their address may be allowlisted again,
    /// but the old record is history.
    #[error("the member is deleted")]
    MemberDeleted,
}

/// A change that took an active admin away (by suspension, deletion or losing
/// the role) must leave at least one behind: checked with the count of active
/// admins after the change, before it commits.
pub fn an_admin_remains(active_admins_after: i64) -> Result<(), Conflict> {
    if active_admins_after == 0 {
        Err(Conflict::LastAdmin)
    } else {
        Ok(())
    }
}

/// Built-in roles always exist: the service itself relies on them.
pub fn may_delete_role(role: &Role) -> Result<(), Conflict> {
    if role.is_builtin() {
        Err(Conflict::BuiltinRole(role.clone()))
    } else {
        Ok(())
    }
}

/// A role still granted is deleted only when the admin says to revoke those grants.
pub fn may_delete_granted_role(role: &Role, grants: i64, force: bool) -> Result<(), Conflict> {
    if grants > 0 && !force {
        Err(Conflict::RoleInUse {
            role: role.clone(),
            grants,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_that_leaves_no_active_admin_is_refused() {
        assert_eq!(an_admin_remains(0), Err(Conflict::LastAdmin));
        assert_eq!(an_admin_remains(1), Ok(()));
    }

    #[test]
    fn built_in_roles_cannot_be_deleted_and_granted_ones_need_force() {
        let admin = Role::admin();
        assert_eq!(may_delete_role(&admin), Err(Conflict::BuiltinRole(admin)));
        let custom = Role::parse("volunteer").unwrap();
        assert_eq!(may_delete_role(&custom), Ok(()));
        assert!(may_delete_granted_role(&custom, 2, false).is_err());
        assert_eq!(may_delete_granted_role(&custom, 2, true), Ok(()));
        assert_eq!(may_delete_granted_role(&custom, 0, false), Ok(()));
    }
}
