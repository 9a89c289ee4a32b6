//! `projector`: serve (default), `migrate`, or an operator command.

const USAGE: &str = "usage: projector [serve | migrate | dead-letters list [--all] | \
dead-letters retry <id> | dead-letters skip <id> | rebuild [--dry-run] | retire <version> | \
verify [--tenant ID | --from T --to T | --sample N] [--version V] [--caught-up]]
(`projector <command> --help` explains each command)";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    service_kit::cli::main(
        projector::SERVICE,
        USAGE,
        projector::build,
        projector::admin::command,
    )
    .await
}
