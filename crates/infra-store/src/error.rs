//! Store errors. Uniqueness violations are told apart so the API can answer
//! 409 with a useful message instead of 500.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL must start with sqlite:// or postgres://")]
    BadUrl,
    #[error("could not connect to the database: {0}")]
    Connect(sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("already exists")]
    Conflict,
    #[error("random number generator failed")]
    Random,
    #[error("database error: {0}")]
    Db(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(d) = &e {
            if d.is_unique_violation() {
                return StoreError::Conflict;
            }
            // The Any driver does not always classify; match both engines'
            // wording for unique violations.
            let m = d.message();
            if m.contains("UNIQUE constraint failed") || m.contains("duplicate key value") {
                return StoreError::Conflict;
            }
        }
        StoreError::Db(e)
    }
}
