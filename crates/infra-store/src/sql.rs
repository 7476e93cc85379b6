//! A small SQL builder for queries with optional filters.
//!
//! sqlx's `QueryBuilder<Any>` writes `?` placeholders, which PostgreSQL
//! rejects; this writes `$1, $2, …`, which both engines accept.

use std::fmt::Write;

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, FromRow};

use crate::{Conn, StoreError};

enum Arg {
    Int(i64),
    Text(String),
}

pub(crate) struct Sql {
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    pub(crate) fn new(s: &str) -> Self {
        Self {
            text: s.to_owned(),
            args: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    fn placeholder(&mut self, a: Arg) -> &mut Self {
        self.args.push(a);
        let _ = write!(self.text, "${}", self.args.len());
        self
    }

    pub(crate) fn int(&mut self, v: i64) -> &mut Self {
        self.placeholder(Arg::Int(v))
    }

    pub(crate) fn text(&mut self, v: &str) -> &mut Self {
        self.placeholder(Arg::Text(v.to_owned()))
    }

    /// `column` names `destination` or a part of it (`destination.x`): the
    /// store's one spelling of "a grant on a destination covers its parts".
    /// An exact prefix comparison, not `LIKE` (where `_` in a name would be
    /// a wildcard) nor a range (whose order depends on the collation).
    pub(crate) fn covered_by(&mut self, column: &str, destination: &str) -> &mut Self {
        let prefix = format!("{destination}.");
        let n = prefix.chars().count();
        self.push(&format!("({column} = "))
            .text(destination)
            .push(&format!(" OR SUBSTR({column}, 1, {n}) = "))
            .text(&prefix)
            .push(")")
    }

    pub(crate) async fn fetch_all<T>(&self, c: &mut Conn) -> Result<Vec<T>, StoreError>
    where
        T: for<'r> FromRow<'r, AnyRow> + Send + Unpin,
    {
        let mut q = sqlx::query_as::<_, T>(AssertSqlSafe(self.text.clone()));
        for a in &self.args {
            q = match a {
                Arg::Int(v) => q.bind(*v),
                Arg::Text(s) => q.bind(s.clone()),
            };
        }
        Ok(q.fetch_all(c).await?)
    }

    pub(crate) async fn execute(&self, c: &mut Conn) -> Result<u64, StoreError> {
        let mut q = sqlx::query(AssertSqlSafe(self.text.clone()));
        for a in &self.args {
            q = match a {
                Arg::Int(v) => q.bind(*v),
                Arg::Text(s) => q.bind(s.clone()),
            };
        }
        Ok(q.execute(c).await?.rows_affected())
    }

    pub(crate) async fn fetch_count(&self, c: &mut Conn) -> Result<u64, StoreError> {
        let mut q = sqlx::query_scalar::<_, i64>(AssertSqlSafe(self.text.clone()));
        for a in &self.args {
            q = match a {
                Arg::Int(v) => q.bind(*v),
                Arg::Text(s) => q.bind(s.clone()),
            };
        }
        Ok(u64::try_from(q.fetch_one(c).await?).unwrap_or(0))
    }
}
