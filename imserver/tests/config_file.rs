//! `--config FILE` and `imserver print-config`, through the binary: precedence (the command
//! line over the environment, over the file, over the defaults), a round trip of the printed
//! configuration, and clear errors for unknown keys, bad values and counts of 0 that mean
//! nothing.

use std::path::Path;
use std::process::{Command, Output};

/// Runs the binary with `args` and only the `IMSERVER_*` variables in `env`.
fn imserver(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_imserver"));
    command.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("IMSERVER_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("the binary runs")
}

fn print_config(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["print-config"];
    all.extend_from_slice(args);
    let out = imserver(&all, env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "print-config failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// The value line of `key` in printed TOML.
fn value<'a>(toml: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key} = ");
    toml.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key} in\n{toml}"))
}

fn write(dir: &Path, text: &str) -> String {
    let path = dir.join("imserver.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn the_command_line_wins_over_the_environment_which_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "rate-limit = 5\nauth = \"open\"\nmax-connections = 300\nidle-timeout = \"500ms\"\n\
         allowed-origins = [\"https://a.example\", \"https://b.example\"]\ndemo = true\n",
    );
    let env = [("IMSERVER_RATE_LIMIT", "7")];
    let toml = print_config(&["--config", &file, "--auth", "token"], &env);
    assert_eq!(value(&toml, "rate-limit"), "7", "environment over file");
    assert_eq!(value(&toml, "auth"), "\"token\"", "command line over file");
    assert_eq!(value(&toml, "max-connections"), "300", "file over default");
    assert_eq!(value(&toml, "idle-timeout"), "\"500ms\"");
    assert_eq!(
        value(&toml, "allowed-origins"),
        "[\"https://a.example\", \"https://b.example\"]"
    );
    assert_eq!(value(&toml, "demo"), "true");
    assert_eq!(
        value(&toml, "send-queue"),
        "1024",
        "the default where nothing says"
    );
    // The file can also be named by the environment.
    let toml = print_config(&[], &[("IMSERVER_CONFIG", &file)]);
    assert_eq!(value(&toml, "max-connections"), "300");
}

#[test]
fn the_printed_configuration_reads_back_as_the_same_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let printed = print_config(
        &[
            "--max-frame-bytes",
            "4096",
            "--allowed-origins",
            "https://x.example",
        ],
        &[],
    );
    // Valid TOML, with every flag's help as a comment.
    let table: toml::Table = toml::from_str(&printed).expect("valid TOML");
    assert!(table.contains_key("http-addr") && table.contains_key("durability"));
    assert!(printed.contains("# Largest HTTP request body"), "{printed}");
    let file = write(dir.path(), &printed);
    assert_eq!(print_config(&["--config", &file], &[]), printed);
}

#[test]
fn an_unknown_key_is_an_error_naming_it_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "max-conections = 10\n");
    let out = imserver(&["--config", &file], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown key `max-conections`"), "{stderr}");
    assert!(stderr.contains("imserver.toml"), "{stderr}");
}

#[test]
fn a_bad_value_in_the_file_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for (text, says) in [
        ("idle-timeout = \"soon\"\n", "soon"),
        ("max-connections = 0\n", "at least 1"),
        ("auth = \"maybe\"\n", "maybe"),
        ("demo = \"yes\"\n", "true or false"),
        ("max-connections = \n", "imserver.toml"),
    ] {
        let file = write(dir.path(), text);
        let out = imserver(&["--config", &file], &[]);
        assert!(!out.status.success(), "{text} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("imserver.toml"), "{text}: {stderr}");
        assert!(stderr.contains(says), "{text}: {stderr}");
    }
    let missing = dir.path().join("missing.toml");
    let out = imserver(&["--config", missing.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read the config file"), "{stderr}");
}

#[test]
fn a_count_of_zero_is_refused_where_zero_means_nothing() {
    for flag in [
        "--max-connections",
        "--max-frame-bytes",
        "--max-body-bytes",
        "--send-queue-bytes",
        "--rate-burst",
        "--max-http-connections",
    ] {
        let out = imserver(&[flag, "0"], &[]);
        assert!(!out.status.success(), "{flag} 0 accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(flag) && stderr.contains("at least 1"),
            "{stderr}"
        );
    }
    for flag in [
        "--regist-deadline",
        "--token-ttl",
        "--http-header-timeout",
        "--ack-flush",
    ] {
        let out = imserver(&[flag, "0s"], &[]);
        assert!(!out.status.success(), "{flag} 0s accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("more than 0"), "{stderr}");
    }
    // Where the help says what 0 means, it is taken.
    let toml = print_config(&["--rate-limit", "0", "--idle-timeout", "0"], &[]);
    assert_eq!(value(&toml, "rate-limit"), "0");
}

#[test]
fn retention_takes_a_duration_or_forever_and_the_admin_token_is_never_printed() {
    let toml = print_config(&["--retention", "30days"], &[]);
    assert_eq!(value(&toml, "retention"), "\"30days\"");
    assert_eq!(value(&toml, "retention-unacked"), "\"forever\"");
    let out = imserver(&["--retention", "0s"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("or forever"),
        "{stderr}"
    );

    let secret = "a-very-secret-admin-token-of-40-characters";
    let toml = print_config(&[], &[("IMSERVER_ADMIN_TOKEN", secret)]);
    assert!(!toml.contains(secret), "{toml}");
    assert!(
        toml.contains("# admin-token = \"\"  (set; not printed)"),
        "{toml}"
    );
    let out = imserver(&["--admin-token", "short"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least 32 characters"), "{stderr}");
}
