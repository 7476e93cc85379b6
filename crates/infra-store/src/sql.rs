//! A small SQL builder for queries with optional filters.
//!
//! sqlx's `QueryBuilder<Any>` writes `?` placeholders, which PostgreSQL
//! rejects; this writes `$1, $2, …`, which both engines accept.

use std::fmt::Write;

use infra_core::Resource;
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
    /// Text columns compare byte by byte (SQLite's `BINARY`), so a prefix
    /// is a range an index can serve.
    bytewise: bool,
}

impl Sql {
    pub(crate) fn new(s: &str) -> Self {
        Self {
            text: s.to_owned(),
            args: Vec::new(),
            bytewise: false,
        }
    }

    /// The same query for connection `c`: on SQLite, whose text columns
    /// compare byte by byte, `covered_by` reads an index.
    pub(crate) fn on(mut self, c: &Conn) -> Self {
        self.bytewise = c.backend_name() == "SQLite";
        self
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

    /// `column` holds a resource that `resource` covers: the store's one
    /// spelling of [`Resource::covers`] (the same resource, or a part
    /// `dest.x` of destination `dest`).
    ///
    /// The part is found by an exact prefix comparison. Not `LIKE`, where
    /// `_` (allowed in names) is a wildcard. Not a range either
    /// (`>= 'dest.' AND < 'dest/'`): its order is the column's collation,
    /// and under a glibc locale such as PostgreSQL's usual `en_US.UTF-8`,
    /// which skips punctuation, `dest.ns` falls outside it. Equality is
    /// the same under every collation. Where text compares byte by byte
    /// (`on` a SQLite connection), the range is exact, and an index on the
    /// column serves it: a string is at least `dest.` and below `dest/`
    /// exactly when it starts with `dest.` (`/` follows `.`).
    pub(crate) fn covered_by(&mut self, column: &str, resource: &Resource) -> &mut Self {
        let r = resource.as_str();
        self.push(&format!("({column} = ")).text(r);
        // Only a destination has parts: `dest.ns` covers itself alone.
        if resource.destination() == r {
            let prefix = format!("{r}.");
            if self.bytewise {
                self.push(&format!(" OR ({column} >= "))
                    .text(&prefix)
                    .push(&format!(" AND {column} < "))
                    .text(&format!("{r}/"))
                    .push(")");
            } else {
                let n = prefix.chars().count();
                self.push(&format!(" OR SUBSTR({column}, 1, {n}) = ")).text(&prefix);
            }
        }
        self.push(")")
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

    #[cfg(test)]
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

#[cfg(test)]
mod tests {
    use sqlx::Connection as _;

    use super::*;

    /// Stored values: resources, and strings that are not (a `%` or a
    /// second dot) to show that no character is a wildcard.
    const ROWS: &[&str] = &[
        "dest",
        "dest.ns",
        "dest.ns2",
        "dest2",
        "dest-x",
        "dest_x",
        "des",
        "d_st",
        "d_st.ns",
        "infra",
        "dest.ns.x",
        "dest%",
        "de%t.ns",
        "dest.%",
    ];
    /// What a grant or a filter may name.
    const QUERIES: &[&str] = &[
        "dest", "dest.ns", "dest2", "dest-x", "dest_x", "des", "d_st", "d_st.ns", "infra", "de",
    ];

    /// What `covered_by` must select: for a resource, exactly what
    /// `Resource::covers` says; for a string that is not one, the rule read
    /// literally (equal, or below `dest.` when the query is a destination).
    fn expected(query: &Resource, row: &str) -> bool {
        match Resource::parse(row) {
            Ok(row) => query.covers(&row),
            Err(_) => {
                let q = query.as_str();
                row == q || (query.destination() == q && row.strip_prefix(q).is_some_and(|r| r.starts_with('.')))
            }
        }
    }

    #[tokio::test]
    async fn sql_agrees_with_resource_covers() {
        sqlx::any::install_default_drivers();
        let mut c = sqlx::AnyConnection::connect("sqlite::memory:").await.unwrap();
        Sql::new("CREATE TABLE t (resource TEXT NOT NULL)")
            .execute(&mut c)
            .await
            .unwrap();
        for r in ROWS {
            Sql::new("INSERT INTO t (resource) VALUES (")
                .text(r)
                .push(")")
                .execute(&mut c)
                .await
                .unwrap();
        }
        for (q, bytewise) in QUERIES.iter().flat_map(|q| [(q, false), (q, true)]) {
            let query = Resource::parse(q).unwrap();
            let mut sql = Sql::new("SELECT resource FROM t WHERE ");
            sql.bytewise = bytewise;
            sql.covered_by("resource", &query).push(" ORDER BY resource");
            let got: Vec<(String,)> = sql.fetch_all(&mut c).await.unwrap();
            let mut got: Vec<String> = got.into_iter().map(|(r,)| r).collect();
            got.sort();
            let mut want: Vec<String> = ROWS
                .iter()
                .filter(|r| expected(&query, r))
                .map(|r| (*r).to_owned())
                .collect();
            want.sort();
            assert_eq!(got, want, "rows covered by {q} (bytewise: {bytewise})");
        }
    }

    #[test]
    fn the_table_means_what_it_says() {
        let dest = Resource::parse("dest").unwrap();
        let covered: Vec<_> = ROWS.iter().filter(|r| expected(&dest, r)).collect();
        assert_eq!(covered, [&"dest", &"dest.ns", &"dest.ns2", &"dest.ns.x", &"dest.%"]);
        let ns = Resource::parse("dest.ns").unwrap();
        let covered: Vec<_> = ROWS.iter().filter(|r| expected(&ns, r)).collect();
        assert_eq!(covered, [&"dest.ns"]);
    }
}
