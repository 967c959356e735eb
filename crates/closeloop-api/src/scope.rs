//! Org-unit scopes on writes: a credential limited to an org unit records steps only on loops
//! in that unit or below it. (Reads cut their answers to the scope themselves, in `reads`.)

use closeloop_domain::{LoopId, Rejection};
use closeloop_store::EventStore;

use crate::AppState;
use crate::auth::Credential;
use crate::error::ApiError;
use crate::reads::{caught_up, models};

/// Refuses a write naming any of `loop_ids` outside the credential's scope with 404
/// `unknown_loop`, exactly as if the loop did not exist, so a scoped caller cannot tell a loop
/// outside its scope from no loop at all. Does nothing for an unscoped credential.
///
/// A loop's org unit never changes once it is received, so the read models' answer for a
/// loop they hold is final. Only loops they do not hold yet (just written, or not there at
/// all) make the check wait for them to catch up with the log; a loop still unknown after that
/// is refused here too, since it is not known to be in scope (and the write would be refused
/// as `unknown_loop` anyway).
///
/// # Errors
/// [`Rejection::UnknownLoop`] (404) for the first loop outside the scope or unknown;
/// [`ApiError::Unavailable`] (503) when the read models cannot catch up.
pub(crate) async fn ensure_covered<S: EventStore>(
    state: &AppState<S>,
    credential: &Credential,
    loop_ids: &[LoopId],
) -> Result<(), ApiError> {
    if credential.org_unit.is_none() {
        return Ok(());
    }
    let unknown = not_yet_known(state, credential, loop_ids)?;
    if unknown.is_empty() {
        return Ok(());
    }
    caught_up(state).await?;
    match not_yet_known(state, credential, &unknown)?.first() {
        Some(loop_id) => Err(Rejection::UnknownLoop(loop_id.as_str().to_owned()).into()),
        None => Ok(()),
    }
}

/// The loops of `loop_ids` the read models do not hold; refuses the first they hold outside
/// the credential's scope.
fn not_yet_known<S>(
    state: &AppState<S>,
    credential: &Credential,
    loop_ids: &[LoopId],
) -> Result<Vec<LoopId>, ApiError> {
    let models = models(state)?;
    let mut unknown = Vec::new();
    for loop_id in loop_ids {
        match models.org_unit_of(loop_id) {
            Some(org_unit) if credential.covers(&org_unit) => {}
            Some(_) => return Err(Rejection::UnknownLoop(loop_id.as_str().to_owned()).into()),
            None => unknown.push(loop_id.clone()),
        }
    }
    Ok(unknown)
}
