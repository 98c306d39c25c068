//! The command line: a subcommand, flags (`--name value`, `--name=value`, or `--name` alone for switches)
//! and positional arguments. Parsed by hand: every subcommand names the flags it takes, and anything else is
//! a usage error, never ignored.

/// Parsed arguments of one subcommand.
#[derive(Debug, Default, Clone)]
pub struct Args {
    /// `(flag, value)` in the order given; switches have no value.
    pub flags: Vec<(String, Option<String>)>,
    /// Positional arguments.
    pub positional: Vec<String>,
}

/// A usage error, printed with the command's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Args {
    /// Parses `argv` (after the subcommand): `valued` flags take a value, `switches` do not.
    ///
    /// # Errors
    /// An unknown flag, or a valued flag without its value.
    pub fn parse(argv: &[String], valued: &[&str], switches: &[&str]) -> Result<Args, Usage> {
        let mut args = Args::default();
        let mut it = argv.iter();
        while let Some(a) = it.next() {
            let Some(flag) = a.strip_prefix("--") else {
                args.positional.push(a.clone());
                continue;
            };
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (flag, None),
            };
            if valued.contains(&name) {
                let value = match inline {
                    Some(v) => v,
                    None => it.next().cloned().ok_or_else(|| Usage(format!("--{name} needs a value")))?,
                };
                args.flags.push((name.to_owned(), Some(value)));
            } else if switches.contains(&name) {
                if inline.is_some() {
                    return Err(Usage(format!("--{name} takes no value")));
                }
                args.flags.push((name.to_owned(), None));
            } else {
                return Err(Usage(format!("unknown option --{name}")));
            }
        }
        Ok(args)
    }

    /// The last value of `--name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.flags.iter().rev().find(|(n, _)| n == name).and_then(|(_, v)| v.as_deref())
    }

    /// Every value of `--name`, in order.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.flags.iter().filter(|(n, _)| n == name).filter_map(|(_, v)| v.as_deref()).collect()
    }

    /// Whether the switch `--name` was given.
    pub fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, _)| n == name)
    }

    /// The one positional argument, named `what` in the error.
    ///
    /// # Errors
    /// None or more than one.
    pub fn one_positional(&self, what: &str) -> Result<&str, Usage> {
        match self.positional.as_slice() {
            [one] => Ok(one),
            [] => Err(Usage(format!("missing {what}"))),
            more => Err(Usage(format!("one {what} expected, got {}", more.len()))),
        }
    }

    /// `--at UNIX_SECONDS`, or the system time.
    ///
    /// # Errors
    /// A value that is not a number of seconds.
    pub fn now(&self) -> Result<rustls_pki_types::UnixTime, Usage> {
        match self.value("at") {
            None => Ok(rustls_pki_types::UnixTime::now()),
            Some(s) => s
                .parse::<u64>()
                .map(|secs| {
                    rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
                })
                .map_err(|_| Usage(format!("--at {s}: Unix seconds expected"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn flags_values_and_positionals() {
        let a = Args::parse(
            &argv("--config c.toml --json --header=A:1 --header B:2 x"),
            &["config", "header"],
            &["json"],
        )
        .unwrap();
        assert_eq!(a.value("config"), Some("c.toml"));
        assert!(a.has("json"));
        assert_eq!(a.values("header"), ["A:1", "B:2"]);
        assert_eq!(a.one_positional("file").unwrap(), "x");
    }

    #[test]
    fn unknown_and_incomplete_flags_are_errors() {
        assert!(Args::parse(&argv("--nope"), &[], &[]).is_err());
        assert!(Args::parse(&argv("--config"), &["config"], &[]).is_err());
        assert!(Args::parse(&argv("--json=1"), &[], &["json"]).is_err());
    }
}
