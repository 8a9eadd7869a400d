//! How a call ended, for people: what the guest printed, flushed to the log; a wasmtime error
//! turned into what happened (its deadline — in its own code or waiting on a named host — its
//! memory limit, a panic, an exit, a stack overflow, a trap).

use std::time::Duration;

use super::CallError;
use super::LogLine;
use super::sandbox::CallState;
use super::table::LoadedPlugin;

/// Writes what the guest printed to the log (it was capped by the pipes).
pub(super) fn flush_output(plugin: &str, state: &mut CallState) {
    let cap = state.max_output_bytes();
    for (stream, contents, dropped) in state.output() {
        let text = String::from_utf8_lossy(&contents);
        let mut lines: Vec<String> = text.lines().take(64).map(str::to_owned).collect();
        if dropped > 0 {
            lines.push(format!(
                "[{dropped} more bytes of {stream} dropped: a call keeps at most {cap} bytes of it]"
            ));
        }
        for line in lines {
            let shown = crate::telemetry::escape_for_log(&line);
            tracing::info!(plugin = %plugin, stream, "plugin output: {shown}");
            state.log.captured.push(LogLine {
                level: stream.to_owned(),
                message: line,
            });
        }
    }
}

/// The call reached its deadline: in its own code, or waiting in a host call (named).
pub(super) fn deadline_error(
    plugin: &LoadedPlugin,
    state: &CallState,
    deadline: Duration,
) -> CallError {
    let waits = state.waits();
    CallError::Deadline {
        plugin: plugin.name.clone(),
        deadline_ms: deadline.as_millis(),
        waited_ms: waits.total.as_millis(),
        waited_on: waits.longest.map(|(what, _)| what),
    }
}

/// Turns a wasmtime error into what happened, for people.
pub(super) fn classify(
    plugin: &LoadedPlugin,
    state: &CallState,
    deadline: Duration,
    err: wasmtime::Error,
) -> CallError {
    let name = plugin.name.clone();
    let trap = err.downcast_ref::<wasmtime::Trap>().copied();
    if trap == Some(wasmtime::Trap::Interrupt) || state.waits().cut {
        return deadline_error(plugin, state, deadline);
    }
    if state.limiter.refused_memory {
        return CallError::OutOfMemory {
            plugin: name,
            limit_mib: (state.limiter.max_memory / (1024 * 1024)) as u64,
        };
    }
    let [_, (_, stderr, _)] = state.output();
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    let reason = if stderr.lines().any(|l| l.contains("panicked at")) {
        "it panicked (its message is in the server log)".to_owned()
    } else if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
        // WASI 0.2's `exit` carries success or failure only: any code but 0 arrives as 1.
        let status = if exit.0 == 0 {
            "it exited with status 0".to_owned()
        } else {
            "it exited with a failure status (WASI 0.2 carries no exit code: what it passed to \
             `exit` is lost)"
                .to_owned()
        };
        format!("{status}; a plugin returns its errors, it does not exit")
    } else if trap == Some(wasmtime::Trap::StackOverflow) || overflowed_its_stack(trap, &err) {
        "it overflowed its stack (too deep a recursion, or too large values on the stack)"
            .to_owned()
    } else if let Some(trap) = trap {
        trap.to_string()
    } else {
        // The message without the backtrace wasmtime appends.
        let text = format!("{:#}", err.root_cause());
        text.split("\nwasm backtrace:")
            .next()
            .unwrap_or_default()
            .lines()
            .next()
            .filter(|l| !l.trim().is_empty())
            .unwrap_or("unknown")
            .to_owned()
    };
    CallError::Trapped {
        plugin: name,
        reason,
    }
}

/// Whether an out-of-bounds access is a stack overflow. Rust (and C) compilers keep a second
/// stack in linear memory, below the data, for the values that do not fit in WebAssembly's
/// own: overflowing it runs its pointer below zero, which the guest sees as an access out of
/// bounds. Told apart by its backtrace (wasmtime keeps the innermost 20 frames): full, and
/// most of it one function, or two calling each other.
fn overflowed_its_stack(trap: Option<wasmtime::Trap>, err: &wasmtime::Error) -> bool {
    if trap != Some(wasmtime::Trap::MemoryOutOfBounds) {
        return false;
    }
    let Some(backtrace) = err.downcast_ref::<wasmtime::WasmBacktrace>() else {
        return false;
    };
    let frames = backtrace.frames();
    if frames.len() < 16 {
        return false;
    }
    let mut counts = std::collections::HashMap::new();
    for frame in frames {
        let key = (frame.module().name().map(str::to_owned), frame.func_index());
        *counts.entry(key).or_insert(0usize) += 1;
    }
    counts.values().any(|&n| n * 2 >= frames.len())
}
