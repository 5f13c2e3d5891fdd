//! Processes killed with SIGKILL. A consumer in the middle of its handlers:
//! what it did not finish comes to the next member of its group. A sender
//! of delayed messages while they wait: all arrive, none early. A producer
//! killed between a half message and its commit: the broker
//! asks the checker of another process of the same producer group, which
//! commits it (`MQ_TEST_ROCKETMQ_URL`).

mod support;

async fn connect(url: String) -> mq_core::Result<mq_core::Client> {
    let config = mq_core::Config::from_url(&url)?;
    Ok(mq_core::Client::new(
        mq_rocket::RocketDriver::connect(&config).await?,
    ))
}

mq_testkit::half_kill_suite!(url: support::url(), connect: connect);

mq_testkit::consumer_kill_suite!(url: support::url(), connect: connect);

mq_testkit::delay_kill_suite!(url: support::url(), connect: connect);
