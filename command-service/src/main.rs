//! `command-service`: serve (default) or `migrate`.

const USAGE: &str = "usage: command-service [serve | migrate]";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    service_kit::cli::main(
        command_service::SERVICE,
        USAGE,
        command_service::build,
        |args, _settings| async move { Err(format!("unknown command {:?}", args.join(" "))) },
    )
    .await
}
