//! Domain types and the access decision. No I/O lives here: every input is
//! validated at the edge (API, CLI, store) into these types, and the
//! decision is a pure function so it can be benchmarked and tested alone.

pub mod access;
pub mod duration;
pub mod grant_view;
pub mod jwks;
pub mod kinds;
pub mod names;
pub mod origin;
pub mod redirect;
pub mod request;
pub mod size;
pub mod workload;

pub use access::{GrantIndex, GrantRule, InfraRole, Subject};
pub use duration::{format_duration, parse_duration};
pub use grant_view::{Binding, GrantView, NamedGrant};
pub use kinds::{DestinationKind, SubjectKind, UnknownWord};
pub use names::{Email, GroupName, NameError, Resource, Role, reserved_by_kubernetes};
pub use origin::{AppOrigin, AppOriginError};
pub use redirect::{ReturnPath, ReturnPathError};
pub use size::parse_size;

/// The resource that governs Infra itself.
pub const INFRA_RESOURCE: &str = "infra";

/// On a Kubernetes cluster, the role that lets a user authenticate and
/// leaves authorization to the cluster's own RBAC: no binding is made.
pub const KUBE_CONNECT_ROLE: &str = "connect";
