//! README.md documents every flag the binary accepts, so the two cannot drift apart.

use std::process::Command;

use lameduck_test_support::binaries::{lameduck, plugin};

fn flags_of(program: &std::path::Path, args: &[&str]) -> Vec<String> {
    let output = Command::new(program)
        .args(args)
        .arg("--help")
        .output()
        .expect("run --help");
    let help = String::from_utf8_lossy(&output.stdout).into_owned();
    help.lines()
        .filter_map(|line| line.trim_start().strip_prefix("--"))
        .filter_map(|rest| rest.split([' ', '=', '<', ',']).next())
        .filter(|flag| !flag.is_empty() && *flag != "help" && *flag != "version")
        .map(|flag| format!("--{flag}"))
        .collect()
}

/// Whether `text` names `flag` as a whole word (`--group`, not `--group-x`).
fn mentions(text: &str, flag: &str) -> bool {
    text.match_indices(flag).any(|(at, _)| {
        let after = text[at + flag.len()..].chars().next();
        !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

#[test]
fn readme_documents_every_flag_of_every_mode() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let (lameduck, plugin) = (lameduck(), plugin());
    let modes: [(&std::path::Path, &[&str]); 7] = [
        (&lameduck, &[]),
        (&lameduck, &["sidecar"]),
        (&lameduck, &["prestop"]),
        (&lameduck, &["install"]),
        (&plugin, &["lint"]),
        (&plugin, &["inject"]),
        (&plugin, &["webhook"]),
    ];
    for (program, mode) in modes {
        let flags = flags_of(program, mode);
        assert!(
            mode.len() == 1 && mode[0] == "install" || !flags.is_empty(),
            "no flags found for {mode:?}"
        );
        for flag in flags {
            assert!(
                mentions(&readme, &flag),
                "README.md does not document {flag} ({mode:?})"
            );
        }
    }
}
