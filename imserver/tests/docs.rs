//! The docs match the binary: every flag `imserver --help` names is in the README's table,
//! with its environment variable.

use std::process::Command;

#[test]
fn every_flag_is_in_the_readme_with_its_variable() {
    let help = Command::new(env!("CARGO_BIN_EXE_imserver"))
        .arg("--help")
        .output()
        .expect("imserver --help runs");
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    let readme = include_str!("../../README.md");
    let mut flags = 0;
    for line in help.lines() {
        let line = line.trim_start();
        let Some(rest) = line.strip_prefix("--") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '-')
            .collect();
        if name == "help" || name == "version" {
            continue;
        }
        flags += 1;
        let var = format!("IMSERVER_{}", name.replace('-', "_").to_uppercase());
        let row = format!("| `--{name}` | `{var}` |");
        assert!(readme.contains(&row), "README.md has no row `{row}`");
    }
    assert!(flags > 20, "the help lists the flags ({flags} found)");
}
