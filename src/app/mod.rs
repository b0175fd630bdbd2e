//! The application layer: what the commands do, without how they are typed or shown.
//!
//! `cli/` parses arguments and presents results; it opens a [`Session`] (configuration,
//! state backend, lock, keyring) and calls the use-cases here. Below this layer: `plan` (pure),
//! `engine` (executes a plan), `provider/` (the clouds), `render/`, `stack/`, `state`.

pub mod apply;
pub mod cloud;
pub mod devices;
pub mod docker;
pub mod fleet;
pub mod health;
pub mod kubernetes;
pub mod migrate;
pub mod remote;
pub mod render;
pub mod session;

pub use session::Session;
