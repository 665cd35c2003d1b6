//! The policy checkpoint: detectors find secrets, personal data and prompt
//! injection; Cedar policies turn the event, the findings and the session's
//! history into allow / flag / deny.

pub mod corpus;
pub mod detect;
pub mod engine;
#[cfg(test)]
mod props;
pub mod state;
#[cfg(test)]
mod tests;

pub use engine::{Compiled, Engine, PolicyError, PolicyInfo, Redact, Source};
pub use state::SessionState;
