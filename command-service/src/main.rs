//! `command-service`: serve (default), `migrate`, or `tenant create NAME` /
//! `tenant add-key TENANT_ID`.

const USAGE: &str =
    "usage: command-service [serve | migrate | tenant create NAME | tenant add-key TENANT_ID]";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    service_kit::cli::main(
        command_service::SERVICE,
        USAGE,
        command_service::build,
        |args, settings| async move { Ok(service_kit::auth::tenant_command(&args, &settings).await?) },
    )
    .await
}
