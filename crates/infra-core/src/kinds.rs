//! Closed sets of words that cross a boundary (the tunnel, the store, the
//! API): who a grant is for and what a destination is.
//!
//! Each word is spelled once, in the table that defines its enum; `as_str`,
//! `parse`, `Display` and serde all use that spelling, so JSON and stored
//! columns stay exactly the strings they were.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::access::Subject;

/// A word outside a closed set; the message is safe to show to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} '{value}': use one of {}", .expected.join(", "))]
pub struct UnknownWord {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static [&'static str],
}

impl UnknownWord {
    pub fn new(what: &'static str, value: &str, expected: &'static [&'static str]) -> Self {
        // Cap what we echo back so a huge input does not become a huge error.
        let value = value.chars().take(64).collect();
        Self { what, value, expected }
    }
}

/// Defines a closed enum of words with one spelling per variant.
macro_rules! words {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $($(#[$vmeta:meta])* $variant:ident = $word:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "&'static str")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }

            pub fn parse(s: &str) -> Result<Self, UnknownWord> {
                match s {
                    $($word => Ok($name::$variant),)+
                    _ => Err(UnknownWord::new($what, s, &[$($word),+])),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownWord;
            fn from_str(s: &str) -> Result<Self, UnknownWord> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownWord;
            fn try_from(s: String) -> Result<Self, UnknownWord> {
                Self::parse(&s)
            }
        }

        impl From<$name> for &'static str {
            fn from(v: $name) -> &'static str {
                v.as_str()
            }
        }
    };
}

words! {
    /// Who a grant is for: a user or a group, by the store's id.
    pub enum SubjectKind ("subject kind") {
        User = "user",
        Group = "group",
    }
}

words! {
    /// What a destination is, as its connector reports it: decides how the
    /// gateway, the CLI and the grant checks treat it.
    pub enum DestinationKind ("destination kind") {
        /// A web application behind the gateway.
        Http = "http",
        /// A Kubernetes API server.
        Kubernetes = "kubernetes",
        /// A PostgreSQL server.
        Postgres = "postgres",
        /// An SSH host.
        Ssh = "ssh",
    }
}

impl SubjectKind {
    /// The subject of this kind with store id `id`.
    pub fn subject(self, id: String) -> Subject {
        match self {
            SubjectKind::User => Subject::User(id),
            SubjectKind::Group => Subject::Group(id),
        }
    }
}

impl Subject {
    pub fn kind(&self) -> SubjectKind {
        match self {
            Subject::User(_) => SubjectKind::User,
            Subject::Group(_) => SubjectKind::Group,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every spelling survives a round trip through `parse` and through
    /// JSON, and JSON uses the same word as `as_str`.
    fn check<T>(all: &[T])
    where
        T: Copy + PartialEq + fmt::Debug + fmt::Display + Serialize + for<'de> Deserialize<'de>,
        T: std::str::FromStr<Err = UnknownWord>,
    {
        for &v in all {
            let word = v.to_string();
            assert_eq!(word.parse::<T>(), Ok(v));
            assert_eq!(serde_json::to_string(&v).unwrap(), format!("\"{word}\""));
            assert_eq!(serde_json::from_str::<T>(&format!("\"{word}\"")).unwrap(), v);
        }
    }

    #[test]
    fn spellings() {
        check(SubjectKind::ALL);
        check(DestinationKind::ALL);
        let words: Vec<_> = DestinationKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(words, ["http", "kubernetes", "postgres", "ssh"]);
        assert_eq!(SubjectKind::User.as_str(), "user");
        assert_eq!(SubjectKind::Group.as_str(), "group");
    }

    #[test]
    fn unknown_words_are_refused() {
        for bad in ["", "User", "groups", "ssh "] {
            assert!(SubjectKind::parse(bad).is_err(), "{bad:?}");
            assert!(DestinationKind::parse(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<DestinationKind>("\"mysql\"").is_err());
        let e = DestinationKind::parse("mysql").unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown destination kind 'mysql': use one of http, kubernetes, postgres, ssh"
        );
    }

    #[test]
    fn subjects_keep_their_kind() {
        for &k in SubjectKind::ALL {
            assert_eq!(k.subject("id".into()).kind(), k);
        }
    }
}
