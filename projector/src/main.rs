//! `projector`: serve (default) or `migrate`.

const USAGE: &str = "usage: projector [serve | migrate]";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    service_kit::cli::main(
        projector::SERVICE,
        USAGE,
        projector::build,
        |args, _settings| async move { Err(format!("unknown command {:?}", args.join(" "))) },
    )
    .await
}
