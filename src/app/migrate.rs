//! `state migrate`: copy a stack's state from one backend to the configured one (local to
//! S3 or back), under both backends' locks.

use std::sync::Arc;
use std::time::Duration;

use super::Session;
use crate::error::{Error, Result};
use crate::state::StateBackend;

/// What was copied.
#[derive(Debug, serde::Serialize)]
pub struct Migrated {
    pub from: String,
    pub to: String,
    pub serial: u64,
    pub agents: usize,
}

/// Copy the state in `from` to the session's backend. Refuses when the target already holds
/// state, unless `force`; the source is left untouched.
pub fn migrate(
    session: &Session,
    from: Arc<dyn StateBackend>,
    force: bool,
    wait: Duration,
) -> Result<Migrated> {
    let (from_at, to_at) = (from.location(), session.store.location());
    if from_at == to_at {
        return Err(Error::Usage(format!(
            "the state is already in {to_at}: name the backend it comes from with --from"
        )));
    }
    let user = session.env.get("USER").unwrap_or("unknown");
    let _from_lock = from
        .lock("state migrate", user, wait)
        .map_err(|e| super::session::lock_error(&session.config.stack, e))?;
    let to_lock = session.lock("state migrate", wait)?;
    let c = &session.config;
    let mut state = from.read_or_new(&c.project, &c.stack, c.provider.kind())?;
    if state.serial == 0 && state.is_empty() {
        return Err(Error::Input(format!(
            "there is no state in {from_at} to migrate"
        )));
    }
    if session.store.read()?.is_some() && !force {
        return Err(Error::Input(format!(
            "{to_at} already holds state for stack `{}`; pass --force to replace it with the one in {from_at}",
            c.stack
        )));
    }
    let agents = state.agents.len();
    session.write_state(&to_lock, &mut state)?;
    Ok(Migrated {
        from: from_at,
        to: to_at,
        serial: state.serial,
        agents,
    })
}
