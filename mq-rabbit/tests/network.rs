//! Network faults between the SDK and RabbitMQ through mq-testkit's fault
//! proxy: the broker unreachable for seconds, a stalled network, frames
//! torn mid-way. The consumer resumes by itself, every send gets a
//! receipt or a typed error, and nothing with a receipt is lost.

use mq_core::{Client, Config};
use mq_testkit::{check_network_faults, require_brokers, FaultProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_and_producers_survive_network_faults() {
    let url = std::env::var("MQ_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let config = Config::from_url(&url)
        .expect("MQ_TEST_AMQP_URL")
        .with_option("delete_on_close", "true");
    let direct = match mq_rabbit::RabbitDriver::connect(&config).await {
        Ok(driver) => Client::new(driver),
        Err(error) if !require_brokers() => {
            eprintln!("SKIPPED: no RabbitMQ at {config} ({error})");
            return;
        }
        Err(error) => panic!("MQ_REQUIRE_BROKERS=1 but RabbitMQ is unreachable: {error}"),
    };
    let upstream = config.hosts()[0].parse().expect("host:port of RabbitMQ");
    let proxy = FaultProxy::start(upstream).await.expect("proxy");
    let mut through = config.url().clone();
    through.set_port(Some(proxy.addr().port())).expect("port");
    let proxied_config = Config::from_url(through.as_str())
        .expect("proxied url")
        .with_option("delete_on_close", "true");
    let proxied = Client::new(
        mq_rabbit::RabbitDriver::connect(&proxied_config)
            .await
            .expect("connect through the proxy"),
    );
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let topic = format!("net-{run}");
    let report =
        check_network_faults(&direct, &proxied, &proxy, &topic, &format!("net-g-{run}")).await;
    eprintln!("rabbitmq network faults: {report:?}");
    let _ = direct.admin().delete_topic(&topic).await;
    let _ = proxied.close().await;
    let _ = direct.close().await;
}
