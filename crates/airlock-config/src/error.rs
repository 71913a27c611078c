use std::io;
use std::path::PathBuf;

/// Everything that can be wrong with a configuration file or the secrets it names.
///
/// Each value is one problem and displays as one line, so a CLI can print a list of them one per
/// line. Functions that check many things at once return `Vec<ConfigError>`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file itself could not be read.
    #[error("{}: cannot read: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },

    /// YAML syntax, a value of the wrong type, or an unknown key. `line` and `column` are 1-based;
    /// the few whole-file problems serde_yaml does not locate (an empty file, several documents)
    /// are reported at 1:1.
    #[error("{origin}:{line}:{column}: {message}")]
    Parse {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },

    /// The file parsed but breaks a rule; `key` is the path of the offending value, such as
    /// `access[1].connections[0]`.
    #[error("{origin}: {key}: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },

    /// A `{env: NAME}` secret names a variable that is not set.
    #[error("environment variable {name} is not set")]
    EnvNotSet { name: String },

    /// A `{env: NAME}` secret was asked for as text but the variable is not UTF-8.
    #[error("environment variable {name} is not valid UTF-8")]
    EnvNotUtf8 { name: String },

    /// A `{file: PATH}` secret could not be read (or, asked for as text, is not UTF-8).
    #[error("cannot read secret file {}: {error}", path.display())]
    SecretFile { path: PathBuf, error: io::Error },

    /// A secret of the configuration could not be resolved; `key` is where the file names it,
    /// such as `connections.orders.roles.admin.password`.
    #[error("{key}: {error}")]
    Secret {
        key: String,
        error: Box<ConfigError>,
    },
}

impl ConfigError {
    pub(crate) fn parse(origin: &str, error: &serde_yaml::Error) -> Self {
        let (line, column) = error.location().map_or((1, 1), |l| (l.line(), l.column()));
        // serde_yaml's message embeds " at line L column C"; we print the location up front.
        let message =
            error
                .to_string()
                .replacen(&format!(" at line {line} column {column}"), "", 1);
        ConfigError::Parse {
            origin: origin.to_owned(),
            line,
            column,
            message,
        }
    }
}
