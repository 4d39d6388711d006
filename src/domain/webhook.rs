//! What webhooks tell other systems: the event types, a public contract whose
//! names never change once released, and the form of an endpoint's URL.

use std::fmt;

/// A kind of membership change a webhook endpoint may subscribe to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// A member exists: their first sign-in, or an admin's onboarding.
    MemberCreated,
    /// A member's status or roles changed; the event says what changed.
    MemberUpdated,
    /// A member was deleted (their sessions and keys end with them).
    MemberDeleted,
    /// An allowlist import was committed; the event carries its report.
    AllowlistImported,
    /// An import batch's unclaimed addresses were withdrawn.
    AllowlistBatchWithdrawn,
    ApiKeyCreated,
    ApiKeyRevoked,
}

impl EventType {
    pub const ALL: [EventType; 7] = [
        Self::MemberCreated,
        Self::MemberUpdated,
        Self::MemberDeleted,
        Self::AllowlistImported,
        Self::AllowlistBatchWithdrawn,
        Self::ApiKeyCreated,
        Self::ApiKeyRevoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MemberCreated => "member.created",
            Self::MemberUpdated => "member.updated",
            Self::MemberDeleted => "member.deleted",
            Self::AllowlistImported => "allowlist.imported",
            Self::AllowlistBatchWithdrawn => "allowlist.batch_withdrawn",
            Self::ApiKeyCreated => "apikey.created",
            Self::ApiKeyRevoked => "apikey.revoked",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == raw.trim())
    }

    /// Parses a list, sorted and without repeats; `Err` names the first unknown type.
    pub fn parse_list<'a>(raw: impl IntoIterator<Item = &'a str>) -> Result<Vec<Self>, String> {
        let mut types = raw
            .into_iter()
            .map(|t| Self::parse(t).ok_or_else(|| t.to_owned()))
            .collect::<Result<Vec<_>, _>>()?;
        types.sort();
        types.dedup();
        Ok(types)
    }

    /// The stored form of a list: names joined by commas.
    pub fn join(types: &[Self]) -> String {
        types
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_lists_are_sorted_without_repeats() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        let list = EventType::parse_list(["member.deleted", "member.created", "member.deleted"]);
        assert_eq!(
            list,
            Ok(vec![EventType::MemberCreated, EventType::MemberDeleted])
        );
        assert_eq!(
            EventType::parse_list(["member.added"]),
            Err("member.added".into())
        );
        assert_eq!(
            EventType::join(&list.unwrap()),
            "member.created,member.deleted"
        );
    }
}
