//! The command line every service binary shares: no arguments (or `serve`) serves;
//! `migrate` applies migrations and exits, for an init container. Anything else is left to
//! the service (e.g. `command-service tenant create NAME`).

/// What the process was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// Serve until a shutdown signal.
    Serve,
    /// Apply migrations and exit.
    Migrate,
    /// A service-specific command, with its arguments.
    Other(Vec<String>),
    /// `--help` or `help`.
    Help,
}

/// Classifies the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Invocation {
    let args: Vec<String> = args.into_iter().collect();
    match args.first().map(String::as_str) {
        None | Some("serve") => Invocation::Serve,
        Some("migrate") => Invocation::Migrate,
        Some("help" | "--help" | "-h") => Invocation::Help,
        Some(_) => Invocation::Other(args),
    }
}

/// Why a service-specific command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// It could not run as asked (unknown command, bad argument, refused): exit status 2,
    /// with the usage.
    #[error("{0}")]
    Usage(String),
    /// It ran and its answer is "no" (e.g. `verify` found differences): exit status 1.
    #[error("{0}")]
    Failed(String),
}

impl From<String> for CommandError {
    fn from(e: String) -> Self {
        CommandError::Usage(e)
    }
}

/// The whole `main` of a service: reads settings, sets up logging, then serves, migrates,
/// or hands a service-specific command to `other`. Returns the process exit code.
pub async fn main<B, BF, O, OF>(
    service: &'static str,
    usage: &str,
    build: B,
    other: O,
) -> std::process::ExitCode
where
    B: FnOnce(crate::Settings) -> BF,
    BF: std::future::Future<Output = Result<crate::App, crate::StartupError>>,
    O: FnOnce(Vec<String>, crate::Settings) -> OF,
    OF: std::future::Future<Output = Result<(), CommandError>>,
{
    use std::process::ExitCode;
    let settings = match crate::Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{service}: {e}");
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init(service, &settings);
    match parse(std::env::args().skip(1)) {
        Invocation::Help => {
            println!("{usage}");
            ExitCode::SUCCESS
        }
        Invocation::Migrate => match crate::connections::migrate(&settings, service).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "migration failed");
                eprintln!("{service}: {e}");
                ExitCode::FAILURE
            }
        },
        Invocation::Serve => {
            let app = match build(settings).await {
                Ok(app) => app,
                Err(e) => {
                    tracing::error!(error = %e, "start-up failed");
                    eprintln!("{service}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let served = app.run(crate::serve::shutdown_signal()).await;
            // Export the spans still buffered before the process ends.
            crate::telemetry::shutdown().await;
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{service}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Invocation::Other(args) => match other(args, settings).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(CommandError::Usage(e)) => {
                eprintln!("{service}: {e}\n\n{usage}");
                ExitCode::from(2)
            }
            Err(CommandError::Failed(e)) => {
                eprintln!("{service}: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Invocation {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn classifies_arguments() {
        assert_eq!(p(&[]), Invocation::Serve);
        assert_eq!(p(&["serve"]), Invocation::Serve);
        assert_eq!(p(&["migrate"]), Invocation::Migrate);
        assert_eq!(p(&["--help"]), Invocation::Help);
        assert_eq!(
            p(&["tenant", "create", "acme"]),
            Invocation::Other(vec!["tenant".into(), "create".into(), "acme".into()])
        );
    }
}
