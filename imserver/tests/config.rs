//! Configuration: what the binary reads from the environment, tests never do.

use imserver::Config;

#[test]
fn only_the_command_line_reads_imserver_variables() {
    // SAFETY: this is the only test of this binary, so no other thread reads the
    // environment while it is changed.
    unsafe {
        std::env::set_var("IMSERVER_RATE_LIMIT", "7");
        std::env::set_var("IMSERVER_AUTH", "open");
    }
    let parsed = <Config as clap::Parser>::try_parse_from(["imserver"]).unwrap();
    assert_eq!(parsed.relay.rate_limit, 7, "the binary reads its variables");
    assert_eq!(parsed.auth.auth, imserver::config::AuthMode::Open);
    for config in [Config::default(), Config::local("/tmp/x")] {
        assert_eq!(config.relay.rate_limit, 100, "tests and embedders do not");
        assert_eq!(config.auth.auth, imserver::config::AuthMode::Token);
    }
}
