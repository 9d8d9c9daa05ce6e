//! The servers lameduck knows by name: how to recognise each in a container (image, command),
//! which signal stops it gracefully, which signals stop it at once, and the setting that bounds
//! its own graceful stop. One table, read by `lint` (and by whatever writes pod specs), so a
//! server's facts live in one place. Every entry was measured with the real server (Debian 12's
//! packages): slow responses in flight, then the signal; `tests/zero_downtime.rs` keeps proving
//! the stop signals under load.

use nix::sys::signal::Signal;

/// One server and how it stops.
#[derive(Debug, PartialEq, Eq)]
pub struct Server {
    /// The name users know it by.
    pub name: &'static str,
    /// Image name patterns: `NAME` matches an image whose name (without registry, repository
    /// and tag) starts with `NAME`; `NAME:PART` one named `NAME` whose tag contains `PART`
    /// (`php:8.3-fpm`).
    pub images: &'static [&'static str],
    /// Program names matched at the start of the executable's file name in the command
    /// (`php-fpm` matches `php-fpm8.2`).
    pub commands: &'static [&'static str],
    /// The signal on which it stops taking connections and finishes the responses in flight.
    pub graceful_stop: Signal,
    /// Signals on which it stops at once, cutting responses in flight.
    pub fast_stop: &'static [Signal],
    /// The setting that bounds its own graceful stop, when it has one.
    pub own_bound: Option<Bound>,
}

/// A server's own bound on its graceful stop.
#[derive(Debug, PartialEq, Eq)]
pub struct Bound {
    /// The setting's name as it is written, which lint looks for in a container's command,
    /// arguments and environment.
    pub setting: &'static str,
    /// Where and how to set it, in one sentence.
    pub hint: &'static str,
    /// Whether the graceful stop needs it at all: without it the "graceful" signal cuts
    /// responses too (php-fpm's `process_control_timeout` defaults to 0).
    pub required: bool,
}

/// Every known server.
pub const SERVERS: &[Server] = &[
    Server {
        name: "nginx",
        images: &["nginx", "openresty"],
        commands: &["nginx", "openresty"],
        graceful_stop: Signal::SIGQUIT,
        fast_stop: &[Signal::SIGTERM, Signal::SIGINT],
        own_bound: Some(Bound {
            setting: "worker_shutdown_timeout",
            hint: "set `worker_shutdown_timeout` in nginx.conf's main context, or pass `-g 'worker_shutdown_timeout 15s;'`",
            required: false,
        }),
    },
    Server {
        name: "Apache httpd",
        images: &["httpd", "apache"],
        commands: &["httpd", "apache2"],
        graceful_stop: Signal::SIGWINCH,
        // HUP restarts at once (cutting responses); QUIT is not handled, so its default
        // action kills the parent alone and leaves the children serving, orphaned.
        fast_stop: &[
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ],
        own_bound: Some(Bound {
            setting: "GracefulShutdownTimeout",
            hint: "set `GracefulShutdownTimeout` in httpd.conf, or pass `-C 'GracefulShutdownTimeout 15'`",
            required: false,
        }),
    },
    Server {
        name: "HAProxy",
        images: &["haproxy"],
        commands: &["haproxy"],
        graceful_stop: Signal::SIGUSR1,
        fast_stop: &[Signal::SIGTERM, Signal::SIGINT],
        own_bound: Some(Bound {
            setting: "hard-stop-after",
            hint: "set `hard-stop-after` in the global section of haproxy.cfg",
            required: false,
        }),
    },
    Server {
        name: "Caddy",
        images: &["caddy"],
        commands: &["caddy"],
        graceful_stop: Signal::SIGTERM,
        fast_stop: &[Signal::SIGQUIT],
        own_bound: Some(Bound {
            setting: "grace_period",
            hint: "set `grace_period` in the Caddyfile's global options (or the JSON config's `apps.http.grace_period`)",
            required: false,
        }),
    },
    Server {
        name: "lighttpd",
        images: &["lighttpd"],
        commands: &["lighttpd"],
        graceful_stop: Signal::SIGINT,
        fast_stop: &[Signal::SIGTERM, Signal::SIGQUIT],
        own_bound: Some(Bound {
            setting: "server.graceful-shutdown-timeout",
            hint: "set `server.graceful-shutdown-timeout` in lighttpd.conf",
            required: false,
        }),
    },
    Server {
        name: "gunicorn",
        images: &["gunicorn"],
        commands: &["gunicorn"],
        graceful_stop: Signal::SIGTERM,
        fast_stop: &[Signal::SIGINT, Signal::SIGQUIT],
        // Its 30 s default outlasts lameduck's default drain timeout of 20 s.
        own_bound: Some(Bound {
            setting: "graceful-timeout",
            hint: "pass `--graceful-timeout` below lameduck's --drain-timeout (or set it in GUNICORN_CMD_ARGS or gunicorn.conf.py as `graceful_timeout`)",
            required: false,
        }),
    },
    Server {
        name: "php-fpm",
        images: &["php-fpm", "php:fpm"],
        commands: &["php-fpm"],
        graceful_stop: Signal::SIGQUIT,
        fast_stop: &[Signal::SIGTERM, Signal::SIGINT],
        own_bound: Some(Bound {
            setting: "process_control_timeout",
            hint: "set `process_control_timeout` in the [global] section of php-fpm.conf: at its default 0, SIGQUIT cuts responses as SIGTERM does",
            required: true,
        }),
    },
];

/// The server a container runs, by its command first (what really runs), then its image.
/// `image` is the image reference as written (`registry/x/httpd:2.4`); `command` the argv
/// of the app (without lameduck's own words).
pub fn known(image: &str, command: &[String]) -> Option<&'static Server> {
    if let Some(program) = program(command) {
        let file = program.rsplit('/').next().unwrap_or(program);
        if let Some(server) = SERVERS
            .iter()
            .find(|s| s.commands.iter().any(|c| file.starts_with(c)))
        {
            return Some(server);
        }
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    let last = last.split('@').next().unwrap_or(last);
    let (name, tag) = last.split_once(':').unwrap_or((last, ""));
    SERVERS.iter().find(|s| {
        s.images
            .iter()
            .any(|pattern| match pattern.split_once(':') {
                Some((exact, part)) => name == exact && tag.contains(part),
                None => name.starts_with(pattern),
            })
    })
}

/// The program a command runs: its first word, or the module of `python -m MODULE`, or the
/// first program of `sh -c 'exec PROGRAM ...'`.
fn program(command: &[String]) -> Option<&str> {
    let first = command.first()?.as_str();
    let file = first.rsplit('/').next().unwrap_or(first);
    if file.starts_with("python") {
        let at = command.iter().position(|word| word == "-m")?;
        return command.get(at + 1).map(String::as_str);
    }
    if matches!(file, "sh" | "bash" | "dash" | "ash") {
        let at = command.iter().position(|word| word == "-c")?;
        let script = command.get(at + 1)?;
        let mut words = script.split_whitespace();
        let word = words.next()?;
        return if word == "exec" {
            words.next()
        } else {
            Some(word)
        };
    }
    Some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    fn name(image: &str, command: &[&str]) -> Option<&'static str> {
        known(image, &argv(command)).map(|s| s.name)
    }

    #[test]
    fn images_name_their_server_without_registry_or_tag() {
        assert_eq!(name("nginx:1.27", &[]), Some("nginx"));
        assert_eq!(
            name("registry.example/x/nginx-unprivileged:1.27", &[]),
            Some("nginx")
        );
        assert_eq!(name("httpd:2.4@sha256:abc", &[]), Some("Apache httpd"));
        assert_eq!(name("bitnami/apache", &[]), Some("Apache httpd"));
        assert_eq!(name("haproxy:2.9", &[]), Some("HAProxy"));
        assert_eq!(name("caddy:2", &[]), Some("Caddy"));
        assert_eq!(name("php:8.3-fpm-alpine", &[]), Some("php-fpm"));
        assert_eq!(name("bitnami/php-fpm:8.2", &[]), Some("php-fpm"));
        assert_eq!(name("php:8.3-cli", &[]), None);
        assert_eq!(name("app:1", &[]), None);
    }

    #[test]
    fn the_command_beats_the_image() {
        assert_eq!(
            name("python:3.12", &["gunicorn", "-b", ":8000", "app:app"]),
            Some("gunicorn")
        );
        assert_eq!(
            name("python:3.12", &["python3", "-m", "gunicorn", "app:app"]),
            Some("gunicorn")
        );
        assert_eq!(
            name("nginx:1.27", &["/usr/bin/caddy", "run"]),
            Some("Caddy")
        );
        assert_eq!(
            name("debian:12", &["/usr/sbin/php-fpm8.2", "-F"]),
            Some("php-fpm")
        );
        assert_eq!(
            name(
                "debian:12",
                &["sh", "-c", "exec lighttpd -D -f /etc/l.conf"]
            ),
            Some("lighttpd")
        );
        assert_eq!(
            name("debian:12", &["apache2", "-DFOREGROUND"]),
            Some("Apache httpd")
        );
        // An unknown program in a known image: the image decides.
        assert_eq!(
            name("nginx:1.27", &["/docker-entrypoint.sh", "nginx"]),
            Some("nginx")
        );
        assert_eq!(name("debian:12", &["python3", "app.py"]), None);
    }

    #[test]
    fn no_server_lists_its_graceful_signal_as_a_fast_stop() {
        for server in SERVERS {
            assert!(
                !server.fast_stop.contains(&server.graceful_stop),
                "{}",
                server.name
            );
        }
    }
}
