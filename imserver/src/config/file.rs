//! `--config FILE`: the flags in a TOML file, one key per flag (`http-addr = "0.0.0.0:6666"`,
//! `max-connections = 16384`, `allowed-origins = ["https://chat.example.com"]`). The command
//! line wins over the environment, which wins over the file, which wins over the defaults.
//! A key that names no flag is an error naming the key.
//!
//! The file's values go through the same parsers as the flags' (they are handed to clap as
//! if they had been typed, before the command line's own), so a value is valid in the file
//! exactly when it is valid as a flag. [`effective`] prints the result back as TOML.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use super::Config;

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A bad flag or value (or `--help`, `--version`): clap's own message.
    #[error("{0}")]
    Flags(#[from] clap::Error),
    #[error("cannot read the config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("in the config file {path}: {reason}")]
    Value { path: PathBuf, reason: String },
}

impl ConfigError {
    /// Prints the error as clap would (help and version to stdout, exit 0) and exits.
    pub fn exit(self) -> ! {
        match self {
            ConfigError::Flags(e) => e.exit(),
            other => {
                eprintln!("error: {other}");
                std::process::exit(2)
            }
        }
    }
}

/// The configuration from `args` (the program name first), the environment and the file
/// `--config` names, if any.
pub fn load(args: impl IntoIterator<Item = OsString>) -> Result<Config, ConfigError> {
    let matches = matches(args.into_iter().collect())?;
    Ok(Config::from_arg_matches(&matches)?)
}

/// The effective configuration of `args`, as TOML that `--config` reads back: every flag
/// with its value and its help as a comment; flags with no value are commented out.
pub fn effective(args: impl IntoIterator<Item = OsString>) -> Result<String, ConfigError> {
    let matches = matches(args.into_iter().collect())?;
    let command = Config::command();
    let mut out = String::from(
        "# imserver configuration: every flag, as `imserver print-config` sees it (command\n\
         # line, then environment, then --config file, then defaults). Read it with --config.\n",
    );
    for arg in command.get_arguments() {
        let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else {
            continue;
        };
        if matches!(long, "help" | "version" | "config") {
            continue;
        }
        out.push('\n');
        if let Some(help) = arg.get_long_help().or(arg.get_help()) {
            for line in wrap(&help.to_string(), 88) {
                out.push_str(&format!("# {line}\n"));
            }
        }
        if let Some(env) = arg.get_env() {
            out.push_str(&format!("# (environment: {})\n", env.to_string_lossy()));
        }
        if long == "store"
            && let Some(store) = matches.get_one::<super::Backend>(id)
        {
            // Its URL may hold a password, which is never printed; the line is then a
            // comment, so that reading the file back cannot use a wrong one.
            let shown = store.redacted();
            match store {
                super::Backend::Postgres(super::Secret(url)) if *url != shown => {
                    out.push_str(&format!(
                        "# {long} = {}  (holds a password; not printed)\n",
                        quoted(&shown)
                    ))
                }
                _ => out.push_str(&format!("{long} = {}\n", quoted(&shown))),
            }
            continue;
        }
        if arg.is_hide_env_values_set() {
            // A secret: where it is set is shown, never what it is.
            let set = matches.get_raw(id).is_some();
            let note = if set { "set; not printed" } else { "not set" };
            out.push_str(&format!("# {long} = \"\"  ({note})\n"));
            continue;
        }
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            out.push_str(&format!("{long} = {}\n", matches.get_flag(id)));
            continue;
        }
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let list = matches!(arg.get_action(), ArgAction::Append);
        match values.as_slice() {
            [] if list => out.push_str(&format!("{long} = []\n")),
            [] => out.push_str(&format!("# {long} = \"\"  (not set)\n")),
            [one] if !list => out.push_str(&format!("{long} = {}\n", scalar(one))),
            many => {
                let items: Vec<String> = many.iter().map(|v| quoted(v)).collect();
                out.push_str(&format!("{long} = [{}]\n", items.join(", ")));
            }
        }
    }
    Ok(out)
}

/// Parses `args`, the environment, and then (when `--config` names one) the file's keys as
/// flags for whatever neither of the former set.
fn matches(args: Vec<OsString>) -> Result<ArgMatches, ConfigError> {
    let first = Config::command().try_get_matches_from(&args)?;
    let Some(path) = first.get_one::<PathBuf>("config").cloned() else {
        return Ok(first);
    };
    let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::File {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let from_file = flags(&table, &first, &path)?;
    // The file's flags first: the command line's own are parsed again after them.
    let mut all = Vec::with_capacity(args.len() + from_file.len());
    all.extend(args.first().cloned());
    all.extend(from_file);
    all.extend(args.into_iter().skip(1));
    Config::command()
        .try_get_matches_from(all)
        .map_err(|e| ConfigError::Value {
            path,
            reason: e
                .to_string()
                .trim_start_matches("error: ")
                .trim()
                .to_owned(),
        })
}

/// The file's keys as flags, leaving out those the command line or the environment set.
fn flags(
    table: &toml::Table,
    given: &ArgMatches,
    path: &Path,
) -> Result<Vec<OsString>, ConfigError> {
    let command = Config::command();
    let bad = |reason: String| ConfigError::Value {
        path: path.to_owned(),
        reason,
    };
    let mut flags = Vec::new();
    for (key, value) in table {
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && !matches!(key.as_str(), "help" | "version" | "config"))
            .ok_or_else(|| bad(format!("unknown key `{key}` (keys are the flags' names, as `imserver print-config` prints them)")))?;
        let id = arg.get_id().as_str();
        if matches!(
            given.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let flag = format!("--{key}");
        match (value, arg.get_action()) {
            (toml::Value::Boolean(on), ArgAction::SetTrue) => {
                if *on {
                    flags.push(flag.into());
                }
            }
            (toml::Value::Array(items), ArgAction::Append) => {
                for item in items {
                    let text = text(item)
                        .ok_or_else(|| bad(format!("`{key}`: {item} is not a string")))?;
                    flags.push(format!("{flag}={text}").into());
                }
            }
            (_, ArgAction::SetTrue) => return Err(bad(format!("`{key}` is true or false"))),
            (value, _) => {
                let text = text(value)
                    .ok_or_else(|| bad(format!("`{key}`: {value} is not a single value")))?;
                flags.push(format!("{flag}={text}").into());
            }
        }
    }
    Ok(flags)
}

/// A TOML value as the text of a flag's value.
fn text(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(n) => Some(n.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A flag's value as TOML: a number when it is one, else a string.
fn scalar(value: &str) -> String {
    match value.parse::<i64>() {
        Ok(n) => n.to_string(),
        Err(_) => quoted(value),
    }
}

fn quoted(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

/// `text` in lines of at most `width` characters, broken at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.lines() {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + word.len() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}
