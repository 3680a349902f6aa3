//! Shards: the community actor, its supervisor, and the directory that finds them.

pub mod actor;
pub mod delegation;
pub mod directory;
mod line;
pub mod messages;
pub mod moves;
mod panels;
pub mod placement;
pub mod plan;
pub mod spill;
pub mod staff;
pub mod state;
pub mod supervisor;

#[cfg(test)]
mod access_tests;
#[cfg(test)]
mod audit_tests;
#[cfg(test)]
mod household_tests;
#[cfg(test)]
mod move_tests;
#[cfg(test)]
mod panel_tests;
#[cfg(test)]
mod propose_tests;
#[cfg(test)]
mod remote_tests;
#[cfg(test)]
mod return_tests;
#[cfg(test)]
mod spill_tests;
#[cfg(test)]
mod tests;

pub use actor::{ShardActor, ShardArgs, ShardConfig};
pub use directory::ShardDirectory;
pub use messages::*;
pub use placement::{Placement, PlacementCell};
pub use plan::{Answer, ClinicCommand, ProviderInput};
pub use supervisor::{HaSupervisor, SupervisorArgs};
