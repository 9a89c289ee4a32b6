//! `command-service`: serve (default), `migrate`, or `tenant create NAME` /
//! `tenant add-key TENANT_ID` / `tenant quota TENANT_ID [NAME=VALUE | NAME=default | reset]...`.

const USAGE: &str =
    "usage: command-service [serve | migrate | tenant create NAME | tenant add-key TENANT_ID
       | tenant quota TENANT_ID [NAME=VALUE | NAME=default | reset]...]

quotas: requests_per_second request_burst concurrent_requests batch_events_per_second
        batch_event_burst concurrent_batches concurrent_queries query_cost_per_second
        query_cost_burst (docs/command-api.md, \"Quotas\")";

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
