//! Processes killed with SIGKILL. A consumer in the middle of its handlers:
//! what it did not finish comes to the next member of its group. A sender
//! of delayed messages while they wait: all arrive, none early. A producer
//! killed between a half message and its commit: the checker
//! of another process commits it (`MQ_TEST_REDIS_URL`).

async fn connect(url: String) -> mq_core::Result<mq_core::Client> {
    let config = mq_core::Config::from_url(&url)?;
    Ok(mq_core::Client::new(
        mq_redis::RedisDriver::connect(&config).await?,
    ))
}

mq_testkit::half_kill_suite!(
    url: std::env::var("MQ_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into()),
    connect: connect,
);

mq_testkit::consumer_kill_suite!(
    url: std::env::var("MQ_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into()),
    connect: connect,
);

mq_testkit::delay_kill_suite!(
    url: std::env::var("MQ_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into()),
    connect: connect,
);
