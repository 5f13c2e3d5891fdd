//! The whole mq conformance suite against a real RabbitMQ
//! (`MQ_TEST_AMQP_URL`, default the local broker). Each scenario's client
//! deletes the exchanges and queues it declared when it closes.

mq_testkit::conformance_suite!(|| async {
    mq_testkit::connect_or_skip(
        "MQ_TEST_AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        |config| async move {
            let config = config.with_option("delete_on_close", "true");
            Ok(mq_core::Client::new(
                mq_rabbit::RabbitDriver::connect(&config).await?,
            ))
        },
    )
    .await
});
