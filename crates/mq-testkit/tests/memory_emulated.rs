//! The whole conformance suite on the memory driver with its native delay
//! switched off, so delays and retry-after go through the core's durable
//! emulation (delay topics and the forwarder).

use mq_core::{memory::MemoryDriver, Client, Config, Support};

mq_testkit::conformance_suite!(|| async {
    let config = Config::from_url("memory://?delay=emulated").expect("url");
    let client = Client::new(MemoryDriver::from_config(&config).expect("driver"));
    assert_eq!(client.capabilities().delay, Support::Emulated);
    assert_eq!(client.capabilities().redelivery_delay, Support::Emulated);
    Some(client)
});
