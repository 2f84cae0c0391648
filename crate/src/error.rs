//! One error type for the whole crate. `code()` is stable: the CLI prints it, JS sees it.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum MgmError {
    /// A file or bundle part that should be there is not.
    Missing(String),
    /// Bytes that do not parse: JSON, safetensors header, tokenizer.
    Format(String),
    /// A config or tensor that does not match what the model expects.
    Mismatch(String),
    /// A request the model cannot serve: empty prompt, prompt longer than the context, bad option.
    Input(String),
    /// The compute device failed: no adapter, out of memory, a failed readback.
    Device(String),
    /// Reading or writing a file failed.
    Io(String),
}

pub type Result<T> = std::result::Result<T, MgmError>;

impl MgmError {
    pub fn code(&self) -> &'static str {
        match self {
            MgmError::Missing(_) => "missing",
            MgmError::Format(_) => "format",
            MgmError::Mismatch(_) => "mismatch",
            MgmError::Input(_) => "input",
            MgmError::Device(_) => "device",
            MgmError::Io(_) => "io",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            MgmError::Missing(m)
            | MgmError::Format(m)
            | MgmError::Mismatch(m)
            | MgmError::Input(m)
            | MgmError::Device(m)
            | MgmError::Io(m) => m,
        }
    }
}

impl fmt::Display for MgmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for MgmError {}

/// `Err(MgmError::Variant(format!(...)))` in one short line.
#[macro_export]
macro_rules! bail {
    ($kind:ident, $($arg:tt)*) => {
        return Err($crate::error::MgmError::$kind(format!($($arg)*)))
    };
}
