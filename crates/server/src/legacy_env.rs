//! The old system's environment variable names, accepted as deprecated
//! aliases so a Railway service moved over from it starts with the variables
//! it already has.
//!
//! | old name | what it becomes |
//! |---|---|
//! | `LATCOM_DIST_API` | `LATCOM_BASE_URL` |
//! | `LATCOM_API_KEY` | `LATCOM_DIST_API_KEY` (the login's `dist_api`) |
//! | `NODE_ENV=production` | `RECARGA_ENV=production` (other values are ignored) |
//! | `RECONCILE_KEY` | ignored: Recarga has no `x-reconcile-key` routes |
//!
//! [`plan`] is the decision, a pure function of the environment: which new
//! settings take an old name's value (only where the new name is unset: the
//! new name always wins) and the warnings to log once at start. [`apply`]
//! hands those values to the command-line definition as defaults of the
//! serve/worker arguments, before clap parses; clap's order then does the
//! rest (a flag beats the new variable, which beats the alias). The process
//! environment itself is never changed (`std::env::set_var` is unsafe, and
//! `unsafe` is forbidden here). Values are never logged: they may be secrets.

use std::collections::BTreeMap;

/// Old name → new name, for the plain renames.
pub const RENAMES: [(&str, &str); 2] = [
    ("LATCOM_DIST_API", "LATCOM_BASE_URL"),
    ("LATCOM_API_KEY", "LATCOM_DIST_API_KEY"),
];

/// The subcommands whose settings the aliases feed.
pub const ALIASED_COMMANDS: [&str; 2] = ["serve", "worker"];

/// A new setting that takes its value from an old name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    /// The new variable (the `env` of a serve/worker argument).
    pub new: &'static str,
    pub value: String,
}

/// What the old names in an environment mean.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AliasPlan {
    pub carried: Vec<Carried>,
    /// One sentence per old name found, to log as a warning once at start.
    pub warnings: Vec<String>,
}

/// Reads the old names in `env`. An empty value counts as unset.
pub fn plan(env: &BTreeMap<String, String>) -> AliasPlan {
    let get = |name: &str| env.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let mut out = AliasPlan::default();
    for (old, new) in RENAMES {
        let Some(value) = get(old) else { continue };
        if get(new).is_some() {
            out.warnings.push(format!(
                "{old} (the old system's name) and {new} are both set: {new} wins and {old} is ignored; remove {old}"
            ));
        } else {
            out.warnings.push(format!(
                "{old} is the old system's name, read as {new}; it is deprecated: rename it to {new}"
            ));
            out.carried.push(Carried {
                new,
                value: value.to_string(),
            });
        }
    }
    if let Some(node_env) = get("NODE_ENV") {
        let production = node_env.eq_ignore_ascii_case("production");
        match get("RECARGA_ENV") {
            _ if !production => out.warnings.push(
                "NODE_ENV is ignored unless it is `production` (read as RECARGA_ENV=production); \
                 set RECARGA_ENV instead"
                    .into(),
            ),
            Some(ours) => out.warnings.push(format!(
                "NODE_ENV=production (the old system's setting) and RECARGA_ENV={ours} are both set: \
                 RECARGA_ENV wins; remove NODE_ENV"
            )),
            None => {
                out.warnings.push(
                    "NODE_ENV=production is the old system's setting, read as RECARGA_ENV=production; \
                     it is deprecated: set RECARGA_ENV=production"
                        .into(),
                );
                out.carried.push(Carried {
                    new: "RECARGA_ENV",
                    value: "production".into(),
                });
            }
        }
    }
    if get("RECONCILE_KEY").is_some() {
        out.warnings.push(
            "RECONCILE_KEY is ignored: Recarga has no x-reconcile-key routes (the old key was one global \
             secret that only ever showed ENVIADESPENSA_001's rows). Operators reconcile with ADMIN_KEY or \
             an operator account (/admin transactions, CSV of exactly the filter); customers with their own \
             API keys (/v1/topups, the /dashboard CSV), each scoped to its customer. Remove RECONCILE_KEY"
                .into(),
        );
    }
    out
}

/// The environment of this process as text (names or values that are not
/// UTF-8 are left out: no setting has such a name).
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// The command-line definition with `plan`'s values as the defaults of the
/// serve/worker arguments whose variables they stand for. A default is
/// hidden from `--help` (it may be a secret); a flag or the new variable
/// still wins.
pub fn apply(mut cmd: clap::Command, plan: &AliasPlan) -> clap::Command {
    for name in ALIASED_COMMANDS {
        cmd = cmd.mut_subcommand(name, |mut sub| {
            for carried in &plan.carried {
                let id = sub
                    .get_arguments()
                    .find(|a| a.get_env().is_some_and(|e| e == carried.new))
                    .map(|a| a.get_id().clone());
                if let Some(id) = id {
                    let value = carried.value.clone();
                    sub = sub.mut_arg(id, |a| a.default_value(value).hide_default_value(true));
                }
            }
            sub
        });
    }
    cmd
}

/// Parses the command line against `plan` (exits with clap's message on a
/// usage error, as `Parser::parse` does).
pub fn parse_cli(plan: &AliasPlan) -> crate::cli::Cli {
    use clap::{CommandFactory, FromArgMatches};
    let matches = apply(crate::cli::Cli::command(), plan).get_matches();
    crate::cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::config::RunEnv;
    use clap::{CommandFactory, FromArgMatches};

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn carried(plan: &AliasPlan) -> Vec<(&str, &str)> {
        plan.carried.iter().map(|c| (c.new, c.value.as_str())).collect()
    }

    #[test]
    fn old_names_are_read_as_the_new_ones_with_one_warning_each() {
        let plan = plan(&env(&[
            ("LATCOM_DIST_API", "https://latcom.example"),
            ("LATCOM_API_KEY", "dist-secret"),
            ("NODE_ENV", "production"),
            ("PATH", "/usr/bin"),
        ]));
        assert_eq!(
            carried(&plan),
            [
                ("LATCOM_BASE_URL", "https://latcom.example"),
                ("LATCOM_DIST_API_KEY", "dist-secret"),
                ("RECARGA_ENV", "production"),
            ]
        );
        assert_eq!(plan.warnings.len(), 3, "{:?}", plan.warnings);
        for (w, (old, new)) in plan.warnings.iter().zip([
            ("LATCOM_DIST_API", "LATCOM_BASE_URL"),
            ("LATCOM_API_KEY", "LATCOM_DIST_API_KEY"),
            ("NODE_ENV", "RECARGA_ENV=production"),
        ]) {
            assert!(w.contains(old) && w.contains(new) && w.contains("deprecated"), "{w}");
        }
        let all = plan.warnings.join("\n");
        assert!(
            !all.contains("dist-secret") && !all.contains("latcom.example"),
            "values are never logged: {all}"
        );
    }

    #[test]
    fn the_new_name_wins_and_the_clash_is_reported() {
        let plan = plan(&env(&[
            ("LATCOM_DIST_API", "https://old.example"),
            ("LATCOM_BASE_URL", "https://new.example"),
            ("LATCOM_API_KEY", "old-key"),
            ("LATCOM_DIST_API_KEY", "new-key"),
            ("NODE_ENV", "production"),
            ("RECARGA_ENV", "development"),
        ]));
        assert!(plan.carried.is_empty(), "{plan:?}");
        assert_eq!(plan.warnings.len(), 3);
        assert!(
            plan.warnings
                .iter()
                .all(|w| w.contains("both set") && w.contains("wins")),
            "{:?}",
            plan.warnings
        );
        assert!(
            plan.warnings[2].contains("RECARGA_ENV=development"),
            "{:?}",
            plan.warnings
        );
    }

    #[test]
    fn what_has_no_counterpart_is_ignored_with_the_reason() {
        let plan = plan(&env(&[
            ("RECONCILE_KEY", "reconcile-secret"),
            ("NODE_ENV", "development"),
            ("LATCOM_API_KEY", ""),
        ]));
        assert!(plan.carried.is_empty(), "{plan:?}");
        assert_eq!(
            plan.warnings.len(),
            2,
            "an empty value counts as unset: {:?}",
            plan.warnings
        );
        assert!(plan.warnings[0].contains("NODE_ENV is ignored"), "{:?}", plan.warnings);
        assert!(
            plan.warnings[1].contains("RECONCILE_KEY is ignored") && plan.warnings[1].contains("x-reconcile-key"),
            "{:?}",
            plan.warnings
        );
        assert!(!plan.warnings.join(" ").contains("reconcile-secret"));
        assert_eq!(super::plan(&env(&[("PATH", "/bin")])), AliasPlan::default());
    }

    fn parse_with(plan: &AliasPlan, args: &[&str]) -> Cli {
        let matches = apply(Cli::command(), plan).try_get_matches_from(args).expect("parse");
        Cli::from_arg_matches(&matches).expect("from matches")
    }

    #[test]
    fn carried_values_reach_serve_and_worker_and_a_flag_still_wins() {
        let plan = plan(&env(&[
            ("LATCOM_DIST_API", "https://latcom.example"),
            ("LATCOM_API_KEY", "dist-secret"),
            ("NODE_ENV", "production"),
        ]));
        for sub in ["serve", "worker"] {
            let (Command::Serve(rt) | Command::Worker(rt)) = parse_with(&plan, &["recarga", sub]).command else {
                panic!("{sub} parsed as another command");
            };
            assert_eq!(rt.env, RunEnv::Production, "{sub}");
            assert_eq!(rt.latcom.base_url.as_deref(), Some("https://latcom.example"));
            assert_eq!(rt.latcom.dist_api_key.map(|s| s.0).as_deref(), Some("dist-secret"));
        }
        let Command::Serve(rt) = parse_with(
            &plan,
            &[
                "recarga",
                "serve",
                "--env",
                "development",
                "--latcom-base-url",
                "https://flag.example",
            ],
        )
        .command
        else {
            panic!("not serve");
        };
        assert_eq!(rt.env, RunEnv::Development);
        assert_eq!(rt.latcom.base_url.as_deref(), Some("https://flag.example"));
        // The carried secret is not shown by --help.
        let help = apply(Cli::command(), &plan)
            .find_subcommand_mut("serve")
            .expect("serve")
            .render_help()
            .to_string();
        assert!(!help.contains("dist-secret"), "{help}");
    }
}
