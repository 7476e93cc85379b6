//! The query audit of one PostgreSQL session: follows the conversation so
//! that every statement that reaches the database is reported once, with
//! its own outcome.
//!
//! The client's messages are seen before they are forwarded; each one that
//! runs something (a simple `Query`, an `Execute`, a `FunctionCall`) joins
//! a queue of statements in flight, in the order the database answers
//! them, with the `Sync` points of the extended protocol between them. The
//! database's answers take statements off the front of that queue:
//!
//! - a simple query or function call ends at its `ReadyForQuery`, with the
//!   command tags (or the first error) seen on the way;
//! - an `Execute` ends at its `CommandComplete`, `EmptyQueryResponse`,
//!   `PortalSuspended` or `ErrorResponse`; after an error the database skips
//!   every message up to the next `Sync`, so the statements in between are
//!   reported as not run;
//! - whatever is still in flight when the session ends is reported with an
//!   unknown outcome: the database may have run it.
//!
//! Query text is whatever bytes the client sent, in its `client_encoding`:
//! shown as UTF-8 where it is, with U+FFFD for the rest, and then also in
//! hex so that nothing is hidden by the replacement.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::Instant;

/// Query text kept in an audit event, in bytes.
const MAX_AUDIT_SQL: usize = 4096;
/// Named prepared statements and portals remembered per session; past it
/// one is forgotten (its statements are then reported by name).
const MAX_NAMED: usize = 10_000;

/// How a statement ended, as the audit log's `result` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The database reported it done.
    Success,
    /// The database reported an error, skipped it, or did not answer
    /// before the session ended.
    Failure,
}

impl From<Outcome> for infra_tunnel::proto::Outcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Success => Self::Success,
            Outcome::Failure => Self::Failure,
        }
    }
}

/// One audit event for a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) outcome: Outcome,
    pub(crate) detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A simple `Query`: ends at `ReadyForQuery`.
    Simple,
    /// An `Execute` of the extended protocol: ends at its own completion.
    Execute,
    /// A `FunctionCall`: ends at `ReadyForQuery`.
    Function,
    /// A `Sync`: ends at `ReadyForQuery`; reports nothing.
    Sync,
}

struct Item {
    kind: Kind,
    /// What ran: `query="…"` (and `query_hex=…`) or `function_call oid=…`.
    what: String,
    /// ` params=…`, or empty.
    params: String,
    started: Instant,
    tags: Vec<String>,
    error: Option<String>,
    /// A function call's result arrived.
    returned: bool,
    /// The database skips it: an earlier message before the same `Sync` failed.
    skipped: bool,
}

pub(crate) struct Audit {
    keep_parameters: bool,
    /// Statement name → what it runs, from `Parse`.
    prepared: HashMap<Vec<u8>, String>,
    /// Portal name → (what it runs, parameters), from `Bind`.
    portals: HashMap<Vec<u8>, (String, String)>,
    queue: VecDeque<Item>,
    /// An extended-protocol message failed with no `Sync` sent after it
    /// yet: the database discards everything the client sends until one.
    skipping: bool,
}

/// `query="…"` for SQL in any encoding, cut at [`MAX_AUDIT_SQL`] bytes;
/// with `query_hex=…` as well when it is not UTF-8.
fn shown_sql(sql: &[u8]) -> String {
    let cut = &sql[..sql.len().min(MAX_AUDIT_SQL)];
    let more = if cut.len() < sql.len() { "…" } else { "" };
    let text = String::from_utf8_lossy(cut);
    let mut out = format!("query={:?}", format!("{text}{more}"));
    if std::str::from_utf8(cut).is_err() {
        out.push_str(" query_hex=");
        for b in cut {
            let _ = write!(out, "{b:02x}");
        }
        out.push_str(more);
    }
    out
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Inserts into a map that keeps at most [`MAX_NAMED`] entries.
fn remember<V>(map: &mut HashMap<Vec<u8>, V>, key: &[u8], value: V) {
    if map.len() >= MAX_NAMED
        && !map.contains_key(key)
        && let Some(old) = map.keys().next().cloned()
    {
        map.remove(&old);
    }
    map.insert(key.to_vec(), value);
}

impl Item {
    fn new(kind: Kind, what: String, params: String, skipped: bool) -> Self {
        Self {
            kind,
            what,
            params,
            started: Instant::now(),
            tags: Vec::new(),
            error: None,
            returned: false,
            skipped,
        }
    }

    fn head(&self) -> String {
        format!(
            "{}{} duration_ms={}",
            self.what,
            self.params,
            self.started.elapsed().as_millis()
        )
    }

    fn succeeded(self, tag: &str) -> Event {
        Event {
            outcome: Outcome::Success,
            detail: format!("{} tag={tag:?}", self.head()),
        }
    }

    fn failed(self, error: &str) -> Event {
        Event {
            outcome: Outcome::Failure,
            detail: format!("{} error={error:?}", self.head()),
        }
    }

    fn not_run(self) -> Event {
        Event {
            outcome: Outcome::Failure,
            detail: format!(
                "{}{} not_run=\"an earlier message before the same Sync failed\"",
                self.what, self.params
            ),
        }
    }

    fn unknown(self, why: &str) -> Event {
        Event {
            outcome: Outcome::Failure,
            detail: format!("{} outcome=\"unknown: {why}\"", self.head()),
        }
    }

    /// The event of a simple query or function call at its `ReadyForQuery`.
    fn ready(mut self) -> Event {
        if let Some(e) = self.error.take() {
            return self.failed(&e);
        }
        let tag = match self.kind {
            Kind::Function if self.returned => "function result".to_owned(),
            Kind::Function => return self.unknown("no function result before ReadyForQuery"),
            _ => self.tags.join(";"),
        };
        self.succeeded(&tag)
    }
}

impl Audit {
    pub(crate) fn new(keep_parameters: bool) -> Self {
        Self {
            keep_parameters,
            prepared: HashMap::new(),
            portals: HashMap::new(),
            queue: VecDeque::new(),
            skipping: false,
        }
    }

    /// ` params=[…]` or ` params=N redacted`.
    fn params(&self, values: &[Option<&[u8]>]) -> String {
        if values.is_empty() {
            return String::new();
        }
        if !self.keep_parameters {
            return format!(" params={} redacted", values.len());
        }
        let vals: Vec<String> = values
            .iter()
            .map(|p| match p {
                None => "NULL".into(),
                Some(v) => format!("{:?}", String::from_utf8_lossy(v)),
            })
            .collect();
        format!(" params=[{}]", vals.join(", "))
    }

    fn push(&mut self, kind: Kind, what: String, params: String) {
        let skipped = self.skipping && kind != Kind::Sync;
        if kind == Kind::Sync {
            self.skipping = false;
        }
        self.queue.push_back(Item::new(kind, what, params, skipped));
    }

    /// A whole message from the client, before it is forwarded.
    pub(crate) fn client(&mut self, tag: u8, body: &[u8]) {
        match tag {
            b'Q' => self.push(
                Kind::Simple,
                shown_sql(infra_proto_pg::query_bytes(body)),
                String::new(),
            ),
            b'P' => {
                // A malformed Parse is refused by the database: nothing runs.
                if let Ok((name, sql)) = infra_proto_pg::parse_message(body) {
                    remember(&mut self.prepared, name, shown_sql(sql));
                }
            }
            b'B' => {
                if let Ok((portal, statement, values)) = infra_proto_pg::bind(body) {
                    let what = self
                        .prepared
                        .get(statement)
                        .cloned()
                        .unwrap_or_else(|| format!("query=unknown statement={:?}", lossy(statement)));
                    let params = self.params(&values);
                    remember(&mut self.portals, portal, (what, params));
                }
            }
            b'E' => {
                let portal = infra_proto_pg::execute_portal(body).unwrap_or_default();
                let (what, params) = self
                    .portals
                    .get(portal)
                    .cloned()
                    .unwrap_or_else(|| (format!("query=unknown portal={:?}", lossy(portal)), String::new()));
                self.push(Kind::Execute, what, params);
            }
            b'F' => {
                let (what, params) = match infra_proto_pg::function_call(body) {
                    Ok(f) => (
                        format!("function_call oid={} args={}", f.oid, f.args.len()),
                        if self.keep_parameters {
                            self.params(&f.args)
                        } else {
                            String::new()
                        },
                    ),
                    // The database refuses it too; still, it was sent.
                    Err(e) => (format!("function_call malformed={:?}", e.to_string()), String::new()),
                };
                self.push(Kind::Function, what, params);
            }
            b'S' => self.push(Kind::Sync, String::new(), String::new()),
            b'C' => match infra_proto_pg::close_target(body) {
                Some((b'S', name)) => {
                    self.prepared.remove(name);
                }
                Some((b'P', name)) => {
                    self.portals.remove(name);
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// After an extended-protocol error the database skips to the next
    /// `Sync`: what the client sent before it is not run.
    fn skip_to_sync(&mut self) {
        let mut synced = false;
        for i in &mut self.queue {
            if i.kind == Kind::Sync {
                synced = true;
                break;
            }
            i.skipped = true;
        }
        if !synced {
            self.skipping = true;
        }
    }

    /// A whole message from the database: returns the events it completes.
    pub(crate) fn server(&mut self, tag: u8, body: &[u8]) -> Vec<Event> {
        let head = self.queue.front().map(|i| i.kind);
        match tag {
            b'C' | b'I' | b's' => {
                let done = match tag {
                    b'C' => infra_proto_pg::command_tag(body).map_or_else(|| lossy(body), str::to_owned),
                    b'I' => "EMPTY QUERY".to_owned(),
                    _ => "PORTAL SUSPENDED".to_owned(),
                };
                match head {
                    Some(Kind::Simple) => {
                        if let Some(i) = self.queue.front_mut() {
                            i.tags.push(done);
                        }
                    }
                    Some(Kind::Execute) => {
                        if let Some(i) = self.queue.pop_front() {
                            return vec![i.succeeded(&done)];
                        }
                    }
                    _ => {}
                }
            }
            b'V' => {
                if let Some(i) = self.queue.front_mut().filter(|i| i.kind == Kind::Function) {
                    i.returned = true;
                }
            }
            b'E' => {
                let (code, message) = infra_proto_pg::error_fields(body);
                let error = format!("{code} {message}");
                match head {
                    Some(Kind::Simple | Kind::Function) => {
                        if let Some(i) = self.queue.front_mut().filter(|i| i.error.is_none()) {
                            i.error = Some(error);
                        }
                    }
                    Some(Kind::Execute) => {
                        let failed = self.queue.pop_front().map(|i| i.failed(&error));
                        self.skip_to_sync();
                        return failed.into_iter().collect();
                    }
                    // A Parse, Bind, Describe or Close failed before this
                    // Sync: nothing that runs was sent in between.
                    Some(Kind::Sync) => {}
                    // The same with nothing queued yet: what the client sends
                    // before its next Sync is skipped.
                    None => self.skipping = true,
                }
            }
            b'Z' => {
                let mut out = Vec::new();
                while let Some(i) = self.queue.pop_front() {
                    if i.skipped {
                        out.push(i.not_run());
                        continue;
                    }
                    match i.kind {
                        Kind::Sync => break,
                        Kind::Simple | Kind::Function => {
                            out.push(i.ready());
                            break;
                        }
                        // The database never answers an Execute with
                        // ReadyForQuery; should one, its outcome is unknown.
                        Kind::Execute => out.push(i.unknown("no result before ReadyForQuery")),
                    }
                }
                return out;
            }
            _ => {}
        }
        Vec::new()
    }

    /// The session ended (`why`): every statement still in flight, with an
    /// unknown outcome (the database may have run it), or as not run.
    pub(crate) fn end(&mut self, why: &str) -> Vec<Event> {
        self.queue
            .drain(..)
            .filter(|i| i.kind != Kind::Sync)
            .map(|i| {
                if i.skipped {
                    i.not_run()
                } else {
                    i.unknown(&format!("the session ended ({why}) before the result"))
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
