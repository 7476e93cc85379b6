//! The token every console form carries: bound to the session (its key id)
//! by a key derived from the root key, so every replica makes and checks
//! the same one, nothing is stored, and a token from one session is worth
//! nothing in another. A page of another site can neither read it nor
//! guess it.

use crate::authn::Caller;
use crate::state::AppState;

const PURPOSE: &str = "infra console csrf v1";

pub(crate) fn token(state: &AppState, caller: &Caller) -> String {
    let mac = state.root_key.derive(&format!("{PURPOSE}:{}", caller.key_id));
    mac.expose().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `given` is this session's token (compared in constant time).
pub(crate) fn check(state: &AppState, caller: &Caller, given: &str) -> bool {
    let want = token(state, caller);
    want.len() == given.len()
        && aws_lc_rs::constant_time::verify_slices_are_equal(want.as_bytes(), given.as_bytes()).is_ok()
}
