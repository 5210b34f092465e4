//! Stopping a run cleanly: Ctrl-C (SIGINT) and SIGTERM (sent by `timeout`, `docker stop` and
//! cluster schedulers) ask the run to finish its step, save a checkpoint and exit; a second
//! signal while the first is pending exits at once (every file is written atomically, so nothing
//! is left half-written).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::Context;
use signal_hook::consts::{SIGINT, SIGTERM};

/// A signal that stops a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Ctrl-C.
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Signal {
    /// The exit status of a run it stopped: 128 + the signal's number, as a shell reports a
    /// process the signal killed.
    pub fn exit_status(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }

    /// How messages name it.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "Ctrl-C",
            Signal::Terminate => "SIGTERM",
        }
    }
}

/// The signals received, set from the signal handlers and read by the training loop after each
/// step.
pub struct Interrupt {
    pending: Arc<AtomicBool>,
    /// The signal number of the last signal received, 0 before any.
    received: Arc<AtomicUsize>,
}

impl Interrupt {
    /// Installs the handlers of SIGINT and SIGTERM.
    pub fn install() -> anyhow::Result<Self> {
        let interrupt = Interrupt {
            pending: Arc::new(AtomicBool::new(false)),
            received: Arc::new(AtomicUsize::new(0)),
        };
        for signal in [Signal::Interrupt, Signal::Terminate] {
            let number = match signal {
                Signal::Interrupt => SIGINT,
                Signal::Terminate => SIGTERM,
            };
            let install = || -> std::io::Result<()> {
                // Registered first, so that it sees the flag as the previous signal left it.
                signal_hook::flag::register_conditional_shutdown(
                    number,
                    i32::from(signal.exit_status()),
                    Arc::clone(&interrupt.pending),
                )?;
                signal_hook::flag::register_usize(
                    number,
                    Arc::clone(&interrupt.received),
                    number as usize,
                )?;
                signal_hook::flag::register(number, Arc::clone(&interrupt.pending))?;
                Ok(())
            };
            install().with_context(|| format!("cannot install the {} handler", signal.name()))?;
        }
        Ok(interrupt)
    }

    /// The signal that asked the run to stop, if one did.
    pub fn requested(&self) -> Option<Signal> {
        if !self.pending.load(Ordering::Relaxed) {
            return None;
        }
        let received = self.received.load(Ordering::Relaxed);
        Some(if received == SIGTERM as usize {
            Signal::Terminate
        } else {
            Signal::Interrupt
        })
    }
}
