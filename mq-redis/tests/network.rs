//! Network faults between the SDK and Redis through mq-testkit's fault
//! proxy: the broker unreachable for seconds, a stalled network, frames
//! torn mid-way. The consumer resumes by itself, every send gets a
//! receipt or a typed error, and nothing with a receipt is lost.

use mq_core::{Client, Config};
use mq_testkit::{check_network_faults, require_brokers, FaultProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_and_producers_survive_network_faults() {
    let url = std::env::var("MQ_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
    let config = Config::from_url(&url).expect("MQ_TEST_REDIS_URL");
    let direct = match mq_redis::RedisDriver::connect(&config).await {
        Ok(driver) => Client::new(driver),
        Err(error) if !require_brokers() => {
            eprintln!("SKIPPED: no Redis at {config} ({error})");
            return;
        }
        Err(error) => panic!("MQ_REQUIRE_BROKERS=1 but Redis is unreachable: {error}"),
    };
    let upstream = config.hosts()[0].parse().expect("host:port of Redis");
    let proxy = FaultProxy::start(upstream).await.expect("proxy");
    let proxied_url = format!(
        "redis://{}/{}?request_timeout=5s",
        proxy.addr(),
        config.url().path().trim_start_matches('/')
    );
    let proxied = Client::new(
        mq_redis::RedisDriver::connect(&Config::from_url(&proxied_url).unwrap())
            .await
            .expect("connect through the proxy"),
    );
    let run = uuid_suffix();
    let topic = format!("net-{run}");
    let report =
        check_network_faults(&direct, &proxied, &proxy, &topic, &format!("net-g-{run}")).await;
    eprintln!("redis network faults: {report:?}");
    let _ = direct.admin().delete_topic(&topic).await;
}

fn uuid_suffix() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}
