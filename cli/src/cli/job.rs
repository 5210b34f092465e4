//! Exit statuses of the commands that run models (`run`, `train`, `eval`, `predict`): a job that
//! cannot be done with the inputs given (a spec with errors, weights or data that do not fit the
//! model, a corrupt file) exits 1; a usage or I/O problem (a missing file, a bad flag) exits 2,
//! as `check` does.

use std::process::ExitCode;

use cnnc::data::DataError;
use cnnc::runtime::npy::NpyError;
use cnnc::runtime::optim::OptimError;
use cnnc::runtime::weights::{LoadError, LoadProblem, SaveError};

use super::{EXIT_INVALID, EXIT_TROUBLE};

/// A job refused because of what its inputs hold (exit 1), with the message to print.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// An [`anyhow::Error`] that exits 1.
pub fn refuse(message: impl Into<String>) -> anyhow::Error {
    Refusal(message.into()).into()
}

/// Turns a command's errors into exit statuses: job failures are printed here and exit 1;
/// everything else is left to [`super::exit`], which prints it and exits 2.
pub fn finish(result: anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
    match result {
        Err(err) if status(&err) == EXIT_INVALID => {
            eprintln!("error: {}", super::terminal::printable(&format!("{err:#}")));
            Ok(ExitCode::from(EXIT_INVALID))
        }
        other => other,
    }
}

/// The exit status an error deserves, decided by the first cause in its chain that tells.
pub fn status(err: &anyhow::Error) -> u8 {
    let by_kind = |invalid: bool| if invalid { EXIT_INVALID } else { EXIT_TROUBLE };
    for cause in err.chain() {
        if cause.is::<Refusal>() || cause.is::<cnnc::runtime::Error>() {
            return EXIT_INVALID;
        }
        if let Some(e) = cause.downcast_ref::<cnnc::spec::Error>() {
            return by_kind(matches!(e, cnnc::spec::Error::Invalid { .. }));
        }
        if let Some(e) = cause.downcast_ref::<LoadError>() {
            let unreadable = e.problems.iter().all(|p| matches!(p, LoadProblem::Io(_)));
            return by_kind(!unreadable);
        }
        if let Some(e) = cause.downcast_ref::<NpyError>() {
            return by_kind(!matches!(e, NpyError::Io { .. }));
        }
        if let Some(e) = cause.downcast_ref::<DataError>() {
            return by_kind(!matches!(
                e,
                DataError::Io { .. }
                    | DataError::NotFound { .. }
                    | DataError::Download { .. }
                    | DataError::Checksum { .. }
            ));
        }
        if let Some(e) = cause.downcast_ref::<OptimError>() {
            return by_kind(!matches!(e, OptimError::Config { .. }));
        }
        if let Some(e) = cause.downcast_ref::<SaveError>() {
            return by_kind(matches!(e, SaveError::NonFinite { .. }));
        }
        if let Some(e) = cause.downcast_ref::<image::ImageError>() {
            return by_kind(!matches!(e, image::ImageError::IoError(_)));
        }
    }
    EXIT_TROUBLE
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn refusals_exit_1_even_under_context() {
        let err = Err::<(), _>(refuse("weights do not fit"))
            .context("cannot run")
            .unwrap_err();
        assert_eq!(status(&err), EXIT_INVALID);
    }

    #[test]
    fn unreadable_files_exit_2_and_corrupt_ones_1() {
        let unreadable = anyhow::Error::new(LoadError {
            path: "w.safetensors".into(),
            problems: vec![LoadProblem::Io("no such file".into())],
        });
        assert_eq!(status(&unreadable), EXIT_TROUBLE);
        let corrupt = anyhow::Error::new(LoadError {
            path: "w.safetensors".into(),
            problems: vec![LoadProblem::Corrupt("truncated".into())],
        });
        assert_eq!(status(&corrupt), EXIT_INVALID);
        assert_eq!(status(&anyhow::anyhow!("bad flag")), EXIT_TROUBLE);
    }
}
