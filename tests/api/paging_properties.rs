//! Property tests of the list cursor codec (`gatehouse::api::paging`): it is
//! public, so they live here rather than in the API module.

use gatehouse::api::input::CursorText;
use gatehouse::api::paging::{decode_cursor, encode_cursor};
use poem_openapi::types::ParseFromParameter;
use proptest::prelude::*;

/// A `cursor` query parameter as the API receives it.
fn cursor_param(text: &str) -> CursorText {
    CursorText::parse_from_parameter(text).expect("any text is a string parameter")
}

proptest! {
    /// Every sort key comes back from its cursor, and the cursor has the form
    /// the spec states. (An empty key has no cursor: an empty `cursor` means
    /// the first page. Keys are addresses, ids and timestamps: never empty,
    /// never a NUL, which Postgres text cannot hold.)
    #[test]
    fn a_cursor_decodes_to_its_key(key in "[^\u{0}]{1,80}") {
        let cursor = cursor_param(&encode_cursor(&key));
        prop_assert!(cursor.text().is_some(), "{:?} is outside the stated form", cursor);
        prop_assert_eq!(decode_cursor(Some(&cursor)).unwrap(), Some(key));
    }

    /// Any text is read without a panic: text of the stated form is a place
    /// to start the page (harmless if we never issued it), anything else a 400.
    #[test]
    fn any_text_is_a_place_or_a_400(
        raw in prop_oneof![any::<String>(), "[A-Za-z0-9_=+/-]{0,24}"],
    ) {
        let cursor = cursor_param(&raw);
        match decode_cursor(Some(&cursor)) {
            Ok(None) => prop_assert!(raw.is_empty()),
            Ok(Some(key)) => {
                prop_assert!(cursor.text().is_some());
                prop_assert!(!key.contains('\0'));
            }
            Err(err) => {
                prop_assert!(cursor.text().is_none(), "{:?} has the stated form", raw);
                prop_assert_eq!(err.status(), 400);
            }
        }
    }
}
