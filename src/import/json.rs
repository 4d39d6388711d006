//! Reading a bulk JSON body, `{"emails": ["a@example.org", {"email":
//! "b@example.org", "roles": ["board"]}, ..], "batch_id": ".."}`, as it
//! streams in: serde_json's parser drives a visitor that hands each item to
//! the import the moment it is read, so a body of any size needs memory for
//! one item, never for the list. (A visitor over serde_json, not
//! a separate streaming crate: the parser the API already uses, with its
//! line/column errors and no new dependency.)
//!
//! Fields may come in any order; `batch_id` (a string; `null` is refused, as
//! in every other body) may follow the addresses. Unknown top-level fields are
//! skipped, as the other JSON bodies do; an item's object takes `email` and
//! `roles` only, since a misspelt `role` would otherwise grant nothing
//! silently. Each item is an address, or an object with its roles, as a CSV
//! row has them. A wrong type anywhere (a number among the addresses,
//! `"emails": null`, `"roles": "board"`), a repeated field, a missing `emails`
//! or broken syntax ends the import with [`ImportError::MalformedJson`] and
//! nothing is written. A role the import does not know makes its row invalid
//! in the report, as in a CSV.

use std::fmt;
use std::io::{BufReader, Read};

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{ImportError, RawRow, RowSink};

/// Reads the body from `reader` into `sink`.
pub(super) fn read_bulk<R: Read>(reader: R, sink: &mut RowSink) -> Result<(), ImportError> {
    let mut state = State {
        sink,
        failure: None,
        in_emails: false,
    };
    let mut parser =
        serde_json::Deserializer::from_reader(BufReader::with_capacity(64 * 1024, reader));
    let parsed = Body(&mut state)
        .deserialize(&mut parser)
        .and_then(|()| parser.end());
    match (state.failure, parsed) {
        // The sink refused (the store went away, a bad batch id): its error, not serde's.
        (Some(failure), _) => Err(failure),
        (None, Ok(())) => Ok(()),
        (None, Err(err)) if err.is_io() => Err(ImportError::Read(err.into())),
        (None, Err(err)) => Err(ImportError::MalformedJson {
            item: state.in_emails.then(|| state.sink.rows() + 1),
            reason: err.to_string(),
        }),
    }
}

struct State<'a> {
    sink: &'a mut RowSink,
    /// What the sink returned when it refused a row or the batch id; serde
    /// only carries its own errors, so the parse stops with a placeholder.
    failure: Option<ImportError>,
    /// Inside the `emails` array (an error names the item it broke at).
    in_emails: bool,
}

impl State<'_> {
    fn refused<E: de::Error>(&mut self, failure: ImportError) -> E {
        let error = E::custom(&failure);
        self.failure = Some(failure);
        error
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    Emails,
    BatchId,
    #[serde(other)]
    Other,
}

/// The top-level object.
struct Body<'s, 'a>(&'s mut State<'a>);

impl<'de> DeserializeSeed<'de> for Body<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Body<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with `emails`, an array of strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let state = self.0;
        let (mut emails, mut batch_id) = (false, false);
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Emails if emails => return Err(de::Error::duplicate_field("emails")),
                Field::Emails => {
                    emails = true;
                    state.in_emails = true;
                    map.next_value_seed(Emails(&mut *state))?;
                    state.in_emails = false;
                }
                Field::BatchId if batch_id => {
                    return Err(de::Error::duplicate_field("batch_id"));
                }
                Field::BatchId => {
                    batch_id = true;
                    let given: String = map.next_value()?;
                    if let Err(failure) = state.sink.name_batch(Some(&given)) {
                        return Err(state.refused(failure));
                    }
                }
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !emails {
            return Err(de::Error::missing_field("emails"));
        }
        Ok(())
    }
}

/// The `emails` array: each string becomes a row, numbered from 1.
struct Emails<'s, 'a>(&'s mut State<'a>);

impl<'de> DeserializeSeed<'de> for Emails<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Emails<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let state = self.0;
        while let Some(item) = seq.next_element::<Item>()? {
            let (email, roles) = match item {
                Item::Address(email) => (email, None),
                Item::Row(row) => (row.email, row.roles),
            };
            let row = RawRow::new(state.sink.rows() + 1, email, roles);
            if let Err(failure) = state.sink.push(row) {
                return Err(state.refused(failure));
            }
        }
        Ok(())
    }
}

/// One item of `emails`: an address, or an address with its roles.
enum Item {
    Address(String),
    Row(Row),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    email: String,
    /// Absent: no roles. `null` is refused, as everywhere.
    #[serde(default, deserialize_with = "present")]
    roles: Option<Vec<String>>,
}

fn present<'de, D: de::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    Vec::deserialize(deserializer).map(Some)
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ItemVisitor)
    }
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an address, or an object with `email` and `roles`")
    }

    fn visit_str<E: de::Error>(self, email: &str) -> Result<Item, E> {
        Ok(Item::Address(email.to_owned()))
    }

    fn visit_string<E: de::Error>(self, email: String) -> Result<Item, E> {
        Ok(Item::Address(email))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Item, A::Error> {
        Row::deserialize(de::value::MapAccessDeserializer::new(map)).map(Item::Row)
    }
}
