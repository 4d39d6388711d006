use std::fmt;

/// The name of a role: lowercase ASCII letters, digits, `-` and `_`, 1 to 64 long.
///
/// Four roles are built in and always exist; admins may create custom ones, so a
/// `Role` is a checked name rather than a closed enum. Whether a custom role
/// exists is the store's business, not this type's.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Role(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    #[error("a role name is 1 to 64 characters of a-z, 0-9, '-' and '_'")]
    Invalid,
}

impl Role {
    pub const MEMBER: &'static str = "member";
    pub const ACTIVE: &'static str = "active";
    pub const SUSTAINER: &'static str = "sustainer";
    pub const ADMIN: &'static str = "admin";
    pub const BUILTIN: [&'static str; 4] =
        [Self::MEMBER, Self::ACTIVE, Self::SUSTAINER, Self::ADMIN];

    /// Accepts any case and surrounding spaces, as spreadsheets have them.
    pub fn parse(raw: &str) -> Result<Self, RoleError> {
        let name = raw.trim().to_ascii_lowercase();
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if valid {
            Ok(Self(name))
        } else {
            Err(RoleError::Invalid)
        }
    }

    pub fn member() -> Self {
        Self(Self::MEMBER.to_owned())
    }

    pub fn admin() -> Self {
        Self(Self::ADMIN.to_owned())
    }

    pub fn is_builtin(&self) -> bool {
        Self::BUILTIN.contains(&self.0.as_str())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a list separated by `;`, `|` or `,`, ignoring empty items and duplicates.
    pub fn parse_list(raw: &str) -> Result<Vec<Self>, RoleError> {
        Self::parse_all(Self::split_list(raw))
    }

    /// The names of a list separated by `;`, `|` or `,` (a spreadsheet cell), blanks left out.
    pub fn split_list(raw: &str) -> impl Iterator<Item = &str> {
        raw.split([';', '|', ','])
            .filter(|item| !item.trim().is_empty())
    }

    /// Parses each name, sorted and without duplicates.
    pub fn parse_all<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Vec<Self>, RoleError> {
        let mut roles = names
            .into_iter()
            .map(Self::parse)
            .collect::<Result<Vec<_>, _>>()?;
        roles.sort();
        roles.dedup();
        Ok(roles)
    }

    /// The storage form of a role list: names joined by `,` (names never contain one).
    pub fn join(roles: &[Self]) -> String {
        roles.iter().map(Self::as_str).collect::<Vec<_>>().join(",")
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Role({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_and_space() {
        assert_eq!(Role::parse(" Sustainer ").unwrap().as_str(), "sustainer");
        assert!(Role::parse("sustainer").unwrap().is_builtin());
        assert!(!Role::parse("board-member").unwrap().is_builtin());
    }

    #[test]
    fn rejects_bad_names() {
        for bad in ["", " ", "a b", "a,b", "rôle", &"x".repeat(65)] {
            assert!(Role::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lists_split_on_any_separator_and_dedupe() {
        let roles = Role::parse_list("admin; Active|admin,,").unwrap();
        assert_eq!(Role::join(&roles), "active,admin");
        assert!(Role::parse_list("admin;no such").is_err());
        assert!(Role::parse_list("").unwrap().is_empty());
    }
}
