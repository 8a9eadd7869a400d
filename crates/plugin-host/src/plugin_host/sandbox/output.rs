//! A plugin's stdout and stderr: kept in memory up to a cap, for the server's log. Past the cap,
//! output is dropped and counted — the plugin's writes still succeed, so a chatty plugin is not
//! failed by a closed pipe (Rust's `println!` panics on one), and the log says how much was lost.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// How much a plugin may write in one go (WASI's `check-write`).
const WRITE_PERMIT: usize = 64 * 1024;

#[derive(Default)]
struct Kept {
    bytes: Vec<u8>,
    dropped: u64,
}

/// A capped in-memory pipe. Clones share it.
#[derive(Clone)]
pub struct CappedOutput {
    cap: usize,
    kept: Arc<Mutex<Kept>>,
}

impl CappedOutput {
    pub fn new(cap: usize) -> Self {
        CappedOutput {
            cap,
            kept: Arc::default(),
        }
    }

    /// What was kept, and how many bytes were dropped past the cap.
    pub fn contents(&self) -> (Vec<u8>, u64) {
        let kept = self.kept.lock().expect("output lock");
        (kept.bytes.clone(), kept.dropped)
    }

    fn keep(&self, buf: &[u8]) {
        let mut kept = self.kept.lock().expect("output lock");
        let room = self.cap.saturating_sub(kept.bytes.len());
        let taken = buf.len().min(room);
        kept.bytes.extend_from_slice(&buf[..taken]);
        kept.dropped += (buf.len() - taken) as u64;
    }
}

#[async_trait::async_trait]
impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.keep(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.keep(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_the_cap_and_counts_the_rest() {
        let mut out = CappedOutput::new(10);
        out.write(Bytes::from_static(b"0123456")).unwrap();
        out.write(Bytes::from_static(b"789abcdef")).unwrap();
        assert_eq!(out.check_write().unwrap(), WRITE_PERMIT);
        let (kept, dropped) = out.contents();
        assert_eq!(kept, b"0123456789");
        assert_eq!(dropped, 6);
    }
}
