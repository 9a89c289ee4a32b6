//! Readiness against a real database that comes and goes.

#[tokio::test]
async fn ready_after_migrating_a_fresh_database_and_503_while_it_is_down() {
    test_support::assert_readiness_follows_database(command_service::build).await;
}
