//! The whole mq conformance suite against a real Redis
//! (`MQ_TEST_REDIS_URL`, default `redis://127.0.0.1:6379/0`). Scenario
//! topics and groups carry a per-run id, so runs do not collide.

mq_testkit::conformance_suite!(|| async {
    mq_testkit::connect_or_skip(
        "MQ_TEST_REDIS_URL",
        "redis://127.0.0.1:6379/0",
        |config| async move {
            Ok(mq_core::Client::new(
                mq_redis::RedisDriver::connect(&config).await?,
            ))
        },
    )
    .await
});
