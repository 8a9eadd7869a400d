//! How a step's plugin call ended, as the saga sees it: transient or permanent failures, and
//! the step's log of every attempt.

use crate::plugin_host::{Logged, PluginError};
use crate::store::models::StepRow;

/// Why a call failed, as the saga sees it.
pub(super) enum Failure {
    Transient(String),
    Permanent(String),
}

pub(super) fn split<T>(
    logged: Logged<T>,
) -> (Result<T, Failure>, Vec<crate::plugin_host::LogLine>) {
    let result = match logged.result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(PluginError::Transient(m))) => Err(Failure::Transient(m)),
        Ok(Err(PluginError::Permanent(m))) => Err(Failure::Permanent(m)),
        // A slow backend may answer next time; a plugin whose own code runs past its deadline,
        // or a broken, missing or disabled one, will not.
        Err(err) if err.waited_on_hosts() => Err(Failure::Transient(err.to_string())),
        Err(err) => Err(Failure::Permanent(err.to_string())),
    };
    (result, logged.log)
}

/// Keeps every attempt's lines (at most 500 in all).
pub(super) fn append_log(step: &mut StepRow, lines: &[crate::plugin_host::LogLine]) {
    let mut all: Vec<crate::plugin_host::LogLine> =
        serde_json::from_str(&step.log).unwrap_or_default();
    all.extend(lines.iter().cloned());
    if all.len() > 500 {
        let cut = all.len() - 500;
        all.drain(..cut);
    }
    step.log = serde_json::to_string(&all).expect("lines");
}
