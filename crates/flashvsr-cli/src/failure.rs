//! Exit codes (PRODUCT.md §5): 0 done, 1 failed, 2 bad usage or input, 3 interrupted.

use std::fmt;
use std::process::ExitCode;

#[derive(Debug)]
pub enum Failure {
    /// Bad usage or bad input: the user can fix it.
    BadInput(String),
    /// Everything else: internal errors, device or write failures.
    Failed(String),
    /// Stopped by SIGINT, SIGTERM or SIGHUP; the job store is left resumable.
    Interrupted,
    /// The device ran out of memory (exit 1): with --max-vram the run retries with smaller tiles.
    OutOfMemory(String),
}

impl Failure {
    pub fn bad(msg: impl fmt::Display) -> Failure {
        Failure::BadInput(msg.to_string())
    }

    pub fn failed(msg: impl fmt::Display) -> Failure {
        Failure::Failed(msg.to_string())
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }

    /// The exit status as a number: 1 failed, 2 bad usage or input, 3 interrupted.
    pub fn code(&self) -> u8 {
        match self {
            Failure::Failed(_) | Failure::OutOfMemory(_) => 1,
            Failure::BadInput(_) => 2,
            Failure::Interrupted => 3,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::BadInput(m) | Failure::Failed(m) | Failure::OutOfMemory(m) => f.write_str(m),
            Failure::Interrupted => f.write_str("interrupted; rerun the same command to resume"),
        }
    }
}

impl From<flashvsr_media::MediaError> for Failure {
    fn from(e: flashvsr_media::MediaError) -> Self {
        if e.is_bad_input() {
            Failure::bad(e)
        } else {
            Failure::failed(e)
        }
    }
}

impl From<flashvsr_model::ModelError> for Failure {
    fn from(e: flashvsr_model::ModelError) -> Self {
        use flashvsr_model::ModelError;
        if e.is_out_of_memory() {
            return Failure::OutOfMemory(e.to_string());
        }
        match e {
            // Weight files and settings come from the user.
            ModelError::Weights(_) | ModelError::Mismatch { .. } | ModelError::Settings(_) => {
                Failure::bad(e)
            }
            ModelError::Tensor(_) => Failure::failed(e),
        }
    }
}

impl From<flashvsr_model::weights::WeightError> for Failure {
    fn from(e: flashvsr_model::weights::WeightError) -> Self {
        // Every weight-file problem is the user's file: missing, corrupt, or in the wrong place.
        Failure::bad(e)
    }
}

pub type Outcome<T> = Result<T, Failure>;

impl From<flashvsr_tensor::TensorError> for Failure {
    fn from(e: flashvsr_tensor::TensorError) -> Self {
        if e.is_out_of_memory() {
            Failure::OutOfMemory(e.to_string())
        } else {
            Failure::failed(e)
        }
    }
}
