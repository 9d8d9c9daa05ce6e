//! Why inject refuses a pod: one line, naming the container where there is one. A leaf, so that
//! the pod surgery (`pod`) and inject's self-check (`check`) can both refuse without importing
//! each other.

use super::journal;

/// Why a pod cannot be injected (or un-injected), in one line naming the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<journal::Mismatch> for Refusal {
    fn from(mismatch: journal::Mismatch) -> Self {
        Refusal(mismatch.0)
    }
}
