//! What request bodies accept, stated once for the spec and the server alike.
//!
//! poem-openapi's `String` takes a JSON number or boolean as its text
//! (`{"name": false}` made a role called `false`); [`Text`] takes a JSON
//! string and nothing else. [`Checked`] strings carry a pattern that goes into
//! the spec as it is and is checked, with the same text, before the domain
//! parser sees the value: what the spec refuses is refused, with the domain's
//! own problem code (422 `invalid_email`…), and what it allows the domain
//! parser takes. The patterns use no look-around, which neither the `regex`
//! crate nor the fuzzers' generators support.

use std::borrow::Cow;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::LazyLock;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{
    ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type,
};
use poem_openapi::validation::{Pattern, Validator};
use regex::Regex;
use serde_json::Value;

use crate::domain::{Email, Role, RoleError};
use crate::error::ApiError;

/// An email address as `domain::Email::parse` takes it, in ASCII: the local
/// part is dot-separated runs of RFC 5322 `atext`, the domain two or more
/// labels of letters, digits and inner hyphens; at most 254 characters.
/// Spaces and tabs around it are allowed and dropped (a phone's keyboard adds them).
pub const EMAIL: &str = r"^[ \t]*[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?[ \t]*$";
pub const EMAIL_MAX: usize = 254;

/// An address as a URL path segment: [`EMAIL`] without `%`. In a path `%` is
/// the escape character, and clients disagree on whether `%41` they were given
/// is already escaped (schemathesis, for one, decodes it before escaping), so
/// the same request could name two different members. `%` in an address is
/// the obsolete "percent hack" of source routing; such an address is removed
/// in the console (`/admin/roster`) instead.
pub const EMAIL_IN_PATH: &str = r"^[ \t]*[A-Za-z0-9!#$&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$&'*+/=?^_`{|}~-]+)*@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?[ \t]*$";

/// A role name: 1 to 64 of letters, digits, `-`, `_`; kept in lowercase
/// (`Board` is the role `board`), as `domain::Role::parse` does.
pub const ROLE: &str = r"^[A-Za-z0-9_-]{1,64}$";

/// A batch id: 1 to 64 of letters, digits, `-`, `_`, `.`; empty asks for a generated one.
pub const BATCH_ID: &str = r"^[A-Za-z0-9_.-]{0,64}$";

/// A page cursor: unpadded base64url, as `next_cursor` is written; empty means the first page.
pub const CURSOR: &str = r"^([A-Za-z0-9_-]{4})*([A-Za-z0-9_-]{2,3})?$";

/// A mail's id as the outbox's cursor; empty means the first page.
pub const UUID_CURSOR: &str =
    r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$";

/// A short label (an API key's name): 1 to 100 characters, no space at either
/// end. The spaces are Rust's `char::is_whitespace` (Unicode White_Space),
/// spelt out: `\s` means a different set in ECMA, Python and Rust regexes.
pub const LABEL: &str = r"^[^\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]([\s\S]{0,98}[^\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])?$";

/// Every form's pattern, compiled once. poem-openapi's `Pattern` validator
/// compiles its regex on each check, which cost a sign-in-link request about
/// a quarter of its throughput (BENCHMARKS.md, session 7).
static COMPILED: LazyLock<HashMap<&'static str, Regex>> = LazyLock::new(|| {
    [
        EMAIL,
        EMAIL_IN_PATH,
        ROLE,
        BATCH_ID,
        CURSOR,
        UUID_CURSOR,
        LABEL,
    ]
    .into_iter()
    .map(|pattern| {
        let regex = Regex::new(pattern).expect("the forms' patterns are valid regexes");
        (pattern, regex)
    })
    .collect()
});

/// Whether `text` matches `pattern`, one of the forms' patterns above (any
/// other is compiled for the occasion: right, only slower).
fn matches_pattern(pattern: &'static str, text: &str) -> bool {
    match COMPILED.get(pattern) {
        Some(regex) => regex.is_match(text),
        None => Pattern::new(pattern).check(&text),
    }
}

/// A JSON string, and only a string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text(pub String);

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Type for Text {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new("string")))
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(std::iter::once(&self.0))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl ParseFromJSON for Text {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(text)) => Ok(Self(text)),
            other => Err(ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

impl ParseFromParameter for Text {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Ok(Self(value.to_owned()))
    }
}

impl ToJSON for Text {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// An optional request field: absent, or a value of its type. poem-openapi's
/// `Option` also takes `null`, which the spec (no field is nullable) refuses.
#[derive(Debug, Clone)]
pub struct Opt<T>(pub Option<T>);

impl<T> Default for Opt<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T: Type> Type for Opt<T> {
    const IS_REQUIRED: bool = false;
    type RawValueType = T::RawValueType;
    type RawElementValueType = T::RawElementValueType;

    fn name() -> Cow<'static, str> {
        format!("optional_{}", T::name()).into()
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        self.0.as_ref().and_then(Type::as_raw_value)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        match &self.0 {
            Some(value) => value.raw_element_iter(),
            None => Box::new(std::iter::empty()),
        }
    }

    fn is_none(&self) -> bool {
        self.0.is_none()
    }
}

impl<T: ParseFromJSON> ParseFromJSON for Opt<T> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            None => Ok(Self(None)),
            Some(Value::Null) => Err(ParseError::custom(
                "null is not a value here; leave the field out",
            )),
            Some(value) => Ok(Self(Some(
                T::parse_from_json(Some(value)).map_err(ParseError::propagate)?,
            ))),
        }
    }
}

impl<T: ToJSON> ToJSON for Opt<T> {
    fn to_json(&self) -> Option<Value> {
        self.0.as_ref().and_then(ToJSON::to_json)
    }
}

/// The form a [`Checked`] string must have, as the spec states it.
pub trait Form: Send + Sync + 'static {
    const PATTERN: &'static str;
    const MAX_LENGTH: Option<usize> = None;
}

/// A string whose form the spec states (pattern, length). Any JSON string
/// parses; the handler asks [`Checked::text`] or a typed parser, so a
/// refusal keeps its own problem code (`invalid_email`, `invalid_role`…).
pub struct Checked<F>(String, PhantomData<F>);

impl<F> std::fmt::Debug for Checked<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<F> Clone for Checked<F> {
    fn clone(&self) -> Self {
        Self(self.0.clone(), PhantomData)
    }
}

impl<F: Form> Checked<F> {
    /// The text, if it has the stated form.
    pub fn text(&self) -> Option<&str> {
        let short_enough = F::MAX_LENGTH.is_none_or(|max| self.0.chars().count() <= max);
        (short_enough && matches_pattern(F::PATTERN, &self.0)).then_some(self.0.as_str())
    }

    /// The text as sent, whatever its form.
    pub fn raw(&self) -> &str {
        &self.0
    }
}

impl<F: Form> Type for Checked<F> {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            pattern: Some(F::PATTERN.to_owned()),
            max_length: F::MAX_LENGTH,
            ..MetaSchema::new("string")
        }))
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl<F: Form> ParseFromJSON for Checked<F> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(text)) => Ok(Self(text, PhantomData)),
            other => Err(ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

impl<F: Form> ParseFromParameter for Checked<F> {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Ok(Self(value.to_owned(), PhantomData))
    }
}

impl<F: Form> ToJSON for Checked<F> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// A [`Checked`] string that does not parse at all without its form: for a
/// branch of a `oneOf`, where the spec's choice of branch depends on it.
pub struct Strict<F>(pub Checked<F>);

impl<F> std::fmt::Debug for Strict<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<F: Form> Type for Strict<F> {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        Checked::<F>::schema_ref()
    }

    fn as_raw_value(&self) -> Option<&String> {
        self.0.as_raw_value()
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        self.0.raw_element_iter()
    }
}

impl<F: Form> ParseFromJSON for Strict<F> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        let checked = Checked::<F>::parse_from_json(value).map_err(ParseError::propagate)?;
        match checked.text() {
            Some(_) => Ok(Self(checked)),
            None => Err(ParseError::custom(format!("does not match {}", F::PATTERN))),
        }
    }
}

impl<F: Form> ToJSON for Strict<F> {
    fn to_json(&self) -> Option<Value> {
        self.0.to_json()
    }
}

pub struct EmailForm;
impl Form for EmailForm {
    const PATTERN: &'static str = EMAIL;
    const MAX_LENGTH: Option<usize> = Some(EMAIL_MAX);
}

pub struct EmailInPathForm;
impl Form for EmailInPathForm {
    const PATTERN: &'static str = EMAIL_IN_PATH;
    const MAX_LENGTH: Option<usize> = Some(EMAIL_MAX);
}

pub struct RoleForm;
impl Form for RoleForm {
    const PATTERN: &'static str = ROLE;
}

pub struct BatchIdForm;
impl Form for BatchIdForm {
    const PATTERN: &'static str = BATCH_ID;
}

pub struct CursorForm;
impl Form for CursorForm {
    const PATTERN: &'static str = CURSOR;
}

pub struct UuidCursorForm;
impl Form for UuidCursorForm {
    const PATTERN: &'static str = UUID_CURSOR;
}

pub struct LabelForm;
impl Form for LabelForm {
    const PATTERN: &'static str = LABEL;
}

pub type EmailText = Checked<EmailForm>;
pub type EmailInPathText = Checked<EmailInPathForm>;
pub type RoleText = Checked<RoleForm>;
pub type BatchIdText = Checked<BatchIdForm>;
pub type LabelText = Checked<LabelForm>;
pub type CursorText = Checked<CursorForm>;
pub type UuidCursorText = Checked<UuidCursorForm>;

/// The forms an address is written in: what [`Checked::email`] reads.
pub trait AddressForm: Form {
    /// Why text the domain parser takes is still refused in this form.
    const REFUSAL: &'static str;
}

impl AddressForm for EmailForm {
    const REFUSAL: &'static str =
        "write the address in ASCII without spaces (an international domain in its xn-- form)";
}

impl AddressForm for EmailInPathForm {
    const REFUSAL: &'static str = "write the address in ASCII without spaces (an international \
         domain in its xn-- form); an address with % cannot be named in a path: remove it in the console";
}

impl<F: AddressForm> Checked<F> {
    /// The address, if it has the stated form and the domain parser takes it
    /// (422 `invalid_email` otherwise, with the parser's reason when it has one).
    pub fn email(&self) -> Result<Email, ApiError> {
        let email = Email::parse(&self.0)?;
        match self.text() {
            Some(_) => Ok(email),
            None => Err(ApiError::unprocessable("invalid_email", F::REFUSAL)),
        }
    }
}

impl RoleText {
    /// The role, if the name has the stated form (422 `invalid_role` otherwise).
    pub fn role(&self) -> Result<Role, ApiError> {
        match self.text() {
            Some(name) => Ok(Role::parse(name)?),
            None => Err(RoleError::Invalid.into()),
        }
    }

    /// Every role of `names`, sorted, without repeats.
    pub fn roles(names: &[Self]) -> Result<Vec<Role>, ApiError> {
        let mut roles = names
            .iter()
            .map(Self::role)
            .collect::<Result<Vec<_>, _>>()?;
        roles.sort();
        roles.dedup();
        Ok(roles)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &'static str, value: &str) -> bool {
        Pattern::new(pattern).check(&value)
    }

    #[test]
    fn every_forms_pattern_is_compiled_once() {
        for pattern in [
            EmailForm::PATTERN,
            EmailInPathForm::PATTERN,
            RoleForm::PATTERN,
            BatchIdForm::PATTERN,
            CursorForm::PATTERN,
            UuidCursorForm::PATTERN,
            LabelForm::PATTERN,
        ] {
            assert!(COMPILED.contains_key(pattern), "{pattern}");
        }
    }

    #[test]
    fn only_a_json_string_is_text() {
        assert_eq!(
            Text::parse_from_json(Some(Value::from("board"))).ok(),
            Some(Text("board".into()))
        );
        for not_text in [Value::from(false), Value::from(123), Value::Null] {
            assert!(Text::parse_from_json(Some(not_text)).is_err());
        }
        assert!(Text::parse_from_json(None).is_err());
    }

    #[test]
    fn what_the_email_pattern_allows_the_email_parser_takes() {
        for good in [
            "ada@example.org",
            "a.b+c@sub.example.co",
            "x@a-b.c0",
            "!#$%&'*+/=?^_`{|}~-@example.org",
            " ada@EXAMPLE.org ",
        ] {
            assert!(matches(EMAIL, good), "{good}");
            assert!(crate::domain::Email::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.org",
            "a..b@example.org",
            ".a@example.org",
            "a@example",
            "a@-x.org",
            "\u{a0}a@example.org",
            "a b@example.org",
            "a@b@example.org",
        ] {
            assert!(!matches(EMAIL, bad), "{bad}");
        }
    }

    #[test]
    fn an_address_in_a_path_is_the_email_form_without_percent() {
        assert_eq!(EMAIL_IN_PATH, EMAIL.replace('%', ""));
        assert!(matches(EMAIL_IN_PATH, "a.b+c@sub.example.co"));
        assert!(!matches(EMAIL_IN_PATH, "a%41@example.org"));
        let refused = EmailInPathText::parse_from_parameter("a%b@example.org").unwrap();
        assert!(refused.email().is_err());
    }

    #[test]
    fn the_label_pattern_is_trimmed_text_of_1_to_100() {
        assert!(matches(LABEL, "x"));
        assert!(matches(LABEL, "billing sync"));
        assert!(matches(LABEL, &"y".repeat(100)));
        assert!(!matches(LABEL, &"y".repeat(101)));
        assert!(!matches(LABEL, ""));
        assert!(!matches(LABEL, " x"));
        assert!(!matches(LABEL, "x "));
        for space in ['\u{85}', '\u{a0}', '\u{2009}', '\u{3000}', '\t'] {
            assert!(space.is_whitespace());
            assert!(!matches(LABEL, &format!("{space}x")), "{space:?}");
            assert!(!matches(LABEL, &format!("x{space}")), "{space:?}");
        }
        // Not whitespace to Rust, so neither to the pattern.
        assert!(matches(LABEL, "\u{feff}x\u{200b}"));
    }
}
