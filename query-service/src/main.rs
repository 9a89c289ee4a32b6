//! `query-service`: serve (default) or `migrate`.

const USAGE: &str = "usage: query-service [serve | migrate]";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    service_kit::cli::main(
        query_service::SERVICE,
        USAGE,
        query_service::build,
        |args, _settings| async move { Err(format!("unknown command {:?}", args.join(" ")).into()) },
    )
    .await
}
