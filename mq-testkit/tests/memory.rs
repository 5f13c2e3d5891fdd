//! The whole conformance suite on the memory driver with native delay.

use mq_core::{memory::MemoryDriver, Client, Config};

mq_testkit::conformance_suite!(|| async {
    let config = Config::from_url("memory://").expect("url");
    Some(Client::new(
        MemoryDriver::from_config(&config).expect("driver"),
    ))
});
