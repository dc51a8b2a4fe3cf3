//! The config module's unit tests: every key through the file, the environment and the
//! command line, the error messages, `--print-config`'s round trip.

use super::load::*;
use super::registry::*;
use super::suggest::*;
use super::values::*;
use super::*;
use std::time::Duration;
use toml::Value;

/// Sets a key by name (from the file, the environment or the command line).
fn set(
    config: &mut Config,
    name: &str,
    value: Value,
    origin: &Origin<'_>,
) -> Result<(), ConfigError> {
    super::load::set(config, key(name).expect("a known key"), &value, origin)
}

/// `name = value` as the file writes it: under `[table]` for a dotted name.
fn file_text(name: &str, value: &str) -> String {
    match name.split_once('.') {
        Some((table, short)) => format!("[{table}]\n{short} = {value}\n"),
        None => format!("{name} = {value}\n"),
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    let mut config = Config::default();
    apply_file(&mut config, std::path::Path::new("forkd.toml"), text)?;
    Ok(config)
}

/// A value other than the default for each key, as the file writes it.
const SAMPLES: &[(&str, &str)] = &[
    ("app", "\"echo\""),
    (
        "bind",
        "[\"127.0.0.1:9000\", \"unix:/tmp/x.sock\", \"fd://web\", \"fd://5\"]",
    ),
    ("workers", "\"auto\""),
    ("threads", "4"),
    ("backlog", "100"),
    ("timeout", "1.5"),
    ("graceful_timeout", "\"2m\""),
    ("keepalive", "0"),
    ("max_requests", "5"),
    ("max_requests_jitter", "\"3\""),
    ("max_worker_memory", "\"512MiB\""),
    ("max_worker_lifetime", "\"6h\""),
    ("pidfile", "\"/run/forkd.pid\""),
    ("user", "\"nobody\""),
    ("group", "\"nogroup\""),
    ("umask", "\"0027\""),
    ("chdir", "\"/srv\""),
    ("preload_app", "true"),
    (
        "forwarded_allow_ips",
        "[\"10.0.0.0/8\", \"::ffff:10.0.0.0/104\", \"*\"]",
    ),
    ("forwarded_headers", "\"forwarded\""),
    (
        "env",
        "{ APP_ENV = \"production\", \"A B\" = \"x = \\\"y\\\"\" }",
    ),
    ("log.level", "\"debug\""),
    ("log.format", "\"json\""),
    ("log.error_log", "\"/var/log/forkd error.log\""),
    ("log.access_log", "\"-\""),
    (
        "log.access_log_format",
        "\"{{literal}} { status } {header:x-request-id} \\\"q\\\"\"",
    ),
    ("limits.request_line", "100"),
    ("limits.request_fields", "5"),
    ("limits.request_field_size", "50"),
    ("limits.max_body", "\"64KiB\""),
    ("limits.header_read_timeout", "\"500ms\""),
    ("limits.body_read_timeout", "0"),
    ("limits.send_timeout", "\"1500ms\""),
    ("limits.max_connections", "7"),
    ("limits.max_connections_per_ip", "2"),
    ("health.live_path", "\"/live\""),
    ("health.ready_path", "\"/ready\""),
    ("health.shutdown_delay", "3"),
    ("metrics.bind", "\"[::1]:9100\""),
    ("python.path", "[\"src\", \"/srv/lib\"]"),
    ("python.interface", "\"wsgi\""),
    ("python.lifespan", "\"off\""),
    ("python.root_path", "\"/api\""),
    ("python.log_config", "\"logging.json\""),
    ("python.websocket_grace", "\"2s\""),
    (
        "python.hooks",
        "{ post_fork = \"app.hooks:post_fork\", when_ready = \"app.hooks:ready\" }",
    ),
    (
        "exec.command",
        "[\"uvicorn\", \"app:app\", \"--fd\", \"3\"]",
    ),
    ("exec.ready", "\"2s\""),
    ("tls.certfile", "\"/etc/forkd/cert.pem\""),
    ("tls.keyfile", "\"/etc/forkd/key.pem\""),
    ("tls.ca_certs", "\"/etc/forkd/ca.pem\""),
    ("tls.client_auth", "\"required\""),
    ("tls.alpn", "[\"http/1.1\"]"),
    ("tls.min_version", "1.3"),
    ("tls.handshake_timeout", "\"250ms\""),
];

#[test]
fn recycling_keys_are_validated() {
    for (key, value) in [
        ("max_worker_memory", "\"lots\""),
        ("max_worker_memory", "\"512PiB\""),
        ("max_worker_memory", "-1"),
        ("max_worker_lifetime", "\"6 days\""),
        ("max_worker_lifetime", "-5"),
        ("max_worker_lifetime", "true"),
    ] {
        let err = parse(&format!("{key} = {value}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("line 1: key `{key}`")) && err.contains("0 = off"),
            "{err}"
        );
    }
    let config = parse("max_worker_memory = \"64MiB\"\nmax_worker_lifetime = \"2s\"\n").unwrap();
    assert_eq!(config.max_worker_memory, 64 << 20);
    assert_eq!(config.max_worker_lifetime, Duration::from_secs(2));
    assert_eq!(Config::default().max_worker_memory, 0);
    assert!(Config::default().max_worker_lifetime.is_zero());
}

#[test]
fn python_keys_are_validated() {
    let mut config = Config::default();
    let origin = Origin::Flag("test");
    let bad = |config: &mut Config, key: &'static str, value: Value| {
        set(config, key, value, &origin).is_err()
    };
    assert!(bad(
        &mut config,
        "python.lifespan",
        Value::String("maybe".into())
    ));
    assert!(bad(
        &mut config,
        "python.interface",
        Value::String("rsgi".into())
    ));
    assert!(bad(
        &mut config,
        "python.root_path",
        Value::String("api".into())
    ));
    assert!(bad(
        &mut config,
        "python.root_path",
        Value::String("/api/".into())
    ));
    assert!(bad(&mut config, "python.path", Value::Integer(3)));
    let hooks = |text: &str| Value::Table(text.parse::<toml::Table>().unwrap());
    assert!(bad(
        &mut config,
        "python.hooks",
        hooks("post_fork = \"nocolon\"")
    ));
    assert!(bad(
        &mut config,
        "python.hooks",
        hooks("post_frok = \"a:b\"")
    ));
    assert!(bad(&mut config, "python.hooks", hooks("post_fork = 3")));
    assert!(bad(
        &mut config,
        "python.hooks",
        hooks("post_fork = \"a:make()\"")
    ));
    assert!(bad(
        &mut config,
        "python.hooks",
        Value::String("a:b".into())
    ));
    assert!(bad(
        &mut config,
        "python.log_config",
        Value::String(" ".into())
    ));
    assert!(bad(&mut config, "python.log_config", Value::Integer(1)));
    assert!(bad(
        &mut config,
        "python.websocket_grace",
        Value::String("soon".into())
    ));
    assert!(bad(
        &mut config,
        "python.websocket_grace",
        Value::Integer(-1)
    ));
    assert!(set(
        &mut config,
        "python.path",
        Value::String("a,b".into()),
        &origin
    )
    .is_ok());
    assert_eq!(config.python.path, ["a", "b"]);
}

#[test]
fn every_key_round_trips_through_print_config() {
    // Every key at its default (printing names `bind`, so it counts as given)...
    let mut default = Config::default();
    let reloaded = parse(&default.to_toml()).unwrap();
    default.bind_given = true;
    assert_eq!(reloaded, default, "{}", default.to_toml());
    // ... and every key set to something else, one at a time.
    for (name, sample) in SAMPLES {
        let mut config =
            parse(&file_text(name, sample)).unwrap_or_else(|e| panic!("sample for {name}: {e}"));
        assert_ne!(
            config,
            Config::default(),
            "sample for {name} is the default"
        );
        config.bind_given = true;
        let text = config.to_toml();
        let reloaded =
            parse(&text).unwrap_or_else(|e| panic!("{name}: printed config: {e}\n{text}"));
        assert_eq!(reloaded, config, "{name}:\n{text}");
    }
}

#[test]
fn keys_print_top_level_first_then_each_table_together() {
    let mut seen: Vec<Option<&str>> = Vec::new();
    for key in KEYS {
        assert!(!key.name.is_empty() && !key.allowed.is_empty());
        assert_eq!(
            KEYS.iter().filter(|k| k.name == key.name).count(),
            1,
            "{}",
            key.name
        );
        let table = key.table();
        if seen.last() != Some(&table) {
            assert!(
                !seen.contains(&table),
                "the keys of {table:?} are not together ({})",
                key.name
            );
            assert!(
                table.is_some() || seen.is_empty(),
                "top-level key {} comes after a table",
                key.name
            );
            seen.push(table);
        }
    }
}

#[test]
fn every_key_has_an_env_name_that_maps_back() {
    for key in KEYS {
        match key.env_var() {
            Some(var) => {
                assert!(var.starts_with("FORKD_"), "{var}");
                assert_eq!(key_for_env(&var).map(|k| k.name), Some(key.name), "{var}");
                if let Some((_, sample)) = SAMPLES.iter().find(|(n, _)| *n == key.name) {
                    // A string as the environment gives it: lists comma-separated.
                    let value: Value = toml::from_str::<toml::Table>(&format!("v = {sample}"))
                        .unwrap()
                        .remove("v")
                        .unwrap();
                    let text = match value {
                        Value::String(s) => s,
                        Value::Array(items) => items
                            .iter()
                            .map(|i| i.as_str().unwrap().to_string())
                            .collect::<Vec<_>>()
                            .join(if key.name == "exec.command" { " " } else { "," }),
                        other => other.to_string(),
                    };
                    let mut from_env = Config::default();
                    super::load::set(&mut from_env, key, &Value::String(text), &Origin::Env(&var))
                        .unwrap_or_else(|e| panic!("{var}: {e}"));
                    let from_file = parse(&file_text(key.name, sample)).unwrap();
                    assert_eq!(from_env, from_file, "{var}");
                }
            }
            None => assert!(matches!(key.print, Print::Table(_)), "{}", key.name),
        }
    }
    assert_eq!(
        key_for_env("FORKD_LOG_ACCESS_LOG").map(|k| k.name),
        Some("log.access_log")
    );
    assert!(key_for_env("FORKD_ENV").is_none());
    // Ignored, with a warning (config::env's tests).
    let env = [("FORKD_ENV".to_string(), "x".to_string())];
    assert_eq!(load(None, &[], &env).unwrap(), Config::default());
    assert!(env_warnings(&env)[0].contains("[env] table"));
}

#[test]
fn unknown_keys_suggest_the_closest() {
    let error = |text: &str| parse(text).unwrap_err().to_string();
    for key in KEYS {
        // The name with its last letter missing.
        let short = key.short_name();
        let typo = &short[..short.len() - 1];
        let text = match key.table() {
            Some(table) if table != key.name => format!("[{table}]\n{typo} = 1\n"),
            _ => format!("{typo} = 1\n"),
        };
        let err = error(&text);
        assert!(
            err.contains(&format!("(did you mean `{short}`?)")),
            "{text}: {err}"
        );
        assert!(err.contains("line"), "{err}");
    }
    let err = error("[lgo]\nlevel = \"info\"\n");
    assert!(
        err.contains("key `lgo`: unknown key (did you mean `log`?)"),
        "{err}"
    );
    let err = error("[limits]\nmax_bdy = 1\n");
    assert!(
        err.contains("forkd.toml line 2: key `limits.max_bdy`: unknown key in [limits] (did you mean `max_body`?)"),
        "{err}"
    );
    // An unknown variable is a warning, not an error (CONTRACT.md).
    let env = [("FORKD_WORKRS".to_string(), "2".to_string())];
    assert_eq!(load(None, &[], &env).unwrap(), Config::default());
    let warnings = env_warnings(&env);
    assert!(
        warnings[0].contains("(did you mean `FORKD_WORKERS`?)"),
        "{warnings:?}"
    );
}

#[test]
fn errors_name_the_key_the_problem_and_what_is_allowed() {
    let error = |text: &str| parse(text).unwrap_err().to_string();
    assert_eq!(
        error("app = \"hello\"\nworkers = 0\n"),
        "forkd: config error: forkd.toml line 2: key `workers`: expected an integer >= 1 or \"auto\", got 0"
    );
    assert_eq!(
        error("forwarded_allow_ips = [\"10.0.0.0/40\"]\n"),
        "forkd: config error: forkd.toml line 1: key `forwarded_allow_ips`: \"10.0.0.0/40\": prefix length above 32; allowed: a list of IP addresses or CIDRs, or \"*\""
    );
    assert_eq!(
        error("forwarded_headers = \"auto\"\n"),
        "forkd: config error: forkd.toml line 1: key `forwarded_headers`: expected x-forwarded | forwarded | both, got \"auto\""
    );
    assert_eq!(
        error("env = 3\n"),
        "forkd: config error: forkd.toml line 1: key `env`: expected a table [env]"
    );
    assert_eq!(
        error("[env]\nA = 1\n"),
        "forkd: config error: forkd.toml line 2: key `env.A`: expected a string"
    );
    assert_eq!(
        error("log = 1\n"),
        "forkd: config error: forkd.toml line 1: key `log`: expected a table [log]"
    );
    let err = error("[log]\naccess_log_format = \"{stauts}\"\n");
    assert!(
        err.starts_with("forkd: config error: forkd.toml line 2: key `log.access_log_format`: unknown field {stauts}")
            && err.ends_with("; allowed: a format string of {named} fields (see the README)"),
        "{err}"
    );
}

#[test]
fn durations_and_sizes() {
    assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert!(parse_duration("10 parsecs").is_err());
    assert!(parse_duration("-1").is_err());
    assert_eq!(parse_size("1024"), Ok(1024));
    assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
    assert_eq!(parse_size("10MiB"), Ok(10 << 20));
    assert_eq!(parse_size("5MB"), Ok(5_000_000));
    assert!(parse_size("10XB").is_err());
    assert!(parse_size("99999999999999GiB").is_err());
}

#[test]
fn bind_entries() {
    assert_eq!(
        parse_bind("127.0.0.1:8000"),
        Ok(BindSpec::Tcp("127.0.0.1:8000".parse().unwrap()))
    );
    assert_eq!(
        parse_bind("[::1]:8000"),
        Ok(BindSpec::Tcp("[::1]:8000".parse().unwrap()))
    );
    assert_eq!(
        parse_bind("unix:/run/a.sock"),
        Ok(BindSpec::Unix("/run/a.sock".into()))
    );
    assert_eq!(parse_bind("fd://3"), Ok(BindSpec::Fd(3)));
    assert_eq!(parse_bind("fd://web"), Ok(BindSpec::Named("web".into())));
    assert!(parse_bind("fd://").is_err());
    assert!(parse_bind("fd://a b").is_err());
    assert!(parse_bind("fd://1").is_err());
    assert!(parse_bind("localhost:80").is_ok());
    assert!(parse_bind("nowhere").is_err());
    assert!(parse_bind("127.0.0.1:99999").is_err());
    assert_eq!(
        parse_bind("tls://127.0.0.1:8443"),
        Ok(BindSpec::Tls(Box::new(BindSpec::Tcp(
            "127.0.0.1:8443".parse().unwrap()
        ))))
    );
    assert_eq!(
        parse_bind("tls+fd://https"),
        Ok(BindSpec::Tls(Box::new(BindSpec::Named("https".into()))))
    );
    assert!(parse_bind("tls://unix:/run/a.sock").is_err());
    assert!(parse_bind("tls+127.0.0.1:1").is_err());
    assert_eq!(
        parse_bind_literal("tls://[::1]:8443").map(|b| b.to_string()),
        Some("tls://[::1]:8443".to_string())
    );
    for text in [
        "127.0.0.1:8000",
        "[::1]:8000",
        "unix:/run/a.sock",
        "fd://3",
        "tls://127.0.0.1:8443",
        "tls://[::1]:8443",
        "tls+fd://https",
        "tls+fd://4",
        "tls+unix:/run/s.sock",
    ] {
        assert_eq!(parse_bind(text).unwrap().to_string(), text);
    }
}

#[test]
fn suggestions_pick_the_closest_key() {
    assert_eq!(
        suggestion("worker", ["workers", "threads"].into_iter()),
        " (did you mean `workers`?)"
    );
    assert_eq!(suggestion("zzzzzz", ["workers", "threads"].into_iter()), "");
    assert_eq!(edit_distance("kitten", "sitting"), 3);
}

#[test]
fn lines_are_found_in_tables() {
    let source = "app = \"x\"\n[log]\nlevel = \"loud\"\n[limits]\nmax_body = 1\n";
    assert_eq!(line_of(source, "app"), Some(1));
    assert_eq!(line_of(source, "log.level"), Some(3));
    assert_eq!(line_of(source, "limits.max_body"), Some(5));
}

#[test]
fn every_source_validates_the_same_way() {
    let mut config = Config::default();
    let env = Origin::Env("FORKD_WORKERS");
    assert!(set(&mut config, "workers", Value::String("auto".into()), &env).is_ok());
    assert_eq!(config.workers, Workers::Auto);
    assert!(config.worker_count() >= 1);
    let err = set(&mut config, "workers", Value::Integer(0), &env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("FORKD_WORKERS") && err.contains("integer >= 1"),
        "{err}"
    );
    assert!(set(&mut config, "umask", Value::String("0022".into()), &env).is_ok());
    assert_eq!(config.umask, Some(0o022));
    assert!(set(
        &mut config,
        "forwarded_allow_ips",
        Value::String("10.0.0.0/8, ::1".into()),
        &env
    )
    .is_ok());
    assert!(set(
        &mut config,
        "forwarded_allow_ips",
        Value::String("10.0.0.0/40".into()),
        &env
    )
    .is_err());
    assert!(set(
        &mut config,
        "log.error_log",
        Value::String("off".into()),
        &env
    )
    .is_err());
    assert!(set(&mut config, "exec.ready", Value::String("2s".into()), &env).is_ok());
    assert_eq!(config.exec.ready, ReadyMode::After(Duration::from_secs(2)));
}

#[test]
fn printed_config_loads_back_to_the_same_config() {
    let mut config = Config::default();
    let origin = Origin::Flag("test");
    set(&mut config, "app", Value::String("echo".into()), &origin).unwrap();
    set(
        &mut config,
        "bind",
        Value::String("127.0.0.1:9000,unix:/tmp/x.sock".into()),
        &origin,
    )
    .unwrap();
    set(
        &mut config,
        "timeout",
        Value::String("1500ms".into()),
        &origin,
    )
    .unwrap();
    set(
        &mut config,
        "exec.command",
        Value::String("uvicorn app:app --fd 3".into()),
        &origin,
    )
    .unwrap();
    config.env.insert("APP_ENV".into(), "production".into());
    set(
        &mut config,
        "tls.certfile",
        Value::String("/etc/forkd/cert.pem".into()),
        &origin,
    )
    .unwrap();
    set(
        &mut config,
        "tls.alpn",
        Value::String("http/1.1".into()),
        &origin,
    )
    .unwrap();
    set(
        &mut config,
        "tls.min_version",
        Value::String("1.3".into()),
        &origin,
    )
    .unwrap();
    let text = config.to_toml();
    let mut reloaded = Config::default();
    apply_file(&mut reloaded, std::path::Path::new("printed.toml"), &text).unwrap();
    assert_eq!(reloaded, config, "{text}");
}

#[test]
fn proc_name_is_printable_ascii_of_1_to_64_bytes() {
    assert_eq!(proc_name("myapp").as_deref(), Ok("myapp"));
    assert!(proc_name("api v2 (blue)").is_ok());
    assert!(proc_name(&"x".repeat(64)).is_ok());
    for bad in ["", "a\nb", "tab\there", "caf\u{e9}", "\x1b[2J", "nul\0"] {
        assert!(proc_name(bad).is_err(), "{bad:?}");
    }
    assert!(proc_name(&"x".repeat(65)).is_err());
    // Every random string: accepted exactly when printable ASCII, 1..=64 bytes.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..20_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = (state % 70) as usize;
        let text: String = (0..len)
            .map(|i| {
                char::from_u32(((state >> (i % 48)) as u32 ^ (i as u32 * 37)) % 0x140)
                    .unwrap_or('?')
            })
            .collect();
        let expected =
            !text.is_empty() && text.len() <= 64 && text.chars().all(|c| (' '..='~').contains(&c));
        assert_eq!(proc_name(&text).is_ok(), expected, "{text:?}");
    }
}

#[test]
fn a_bad_proc_name_names_the_key() {
    let err = parse("proc_name = \"a\\nb\"\n").unwrap_err().to_string();
    assert!(err.contains("proc_name"), "{err}");
}

#[test]
fn a_certificate_with_no_tls_bind_serves_tls_on_every_bind_as_gunicorn() {
    let load_text = |name: &str, text: &str| {
        let path = std::env::temp_dir().join(format!("forkd-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let loaded = load(Some(&path), &[], &[]);
        let _ = std::fs::remove_file(&path);
        loaded.unwrap()
    };
    let tls = "[tls]\ncertfile = \"/c.pem\"\nkeyfile = \"/k.pem\"\n";
    let shown =
        |config: &Config| -> Vec<String> { config.bind.iter().map(|b| b.to_string()).collect() };
    let all = load_text(
        "tls-all",
        &format!("bind = [\"0.0.0.0:8443\", \"unix:/run/a.sock\", \"fd://3\"]\n{tls}"),
    );
    assert_eq!(
        shown(&all),
        ["tls://0.0.0.0:8443", "tls+unix:/run/a.sock", "tls+fd://3"]
    );
    // The default bind too.
    let default = load_text("tls-default", tls);
    assert_eq!(shown(&default), ["tls://127.0.0.1:8000"]);
    // With a TLS bind among them, each is as it says.
    let mixed = load_text(
        "tls-mixed",
        &format!("bind = [\"tls://0.0.0.0:8443\", \"127.0.0.1:8000\"]\n{tls}"),
    );
    assert_eq!(shown(&mixed), ["tls://0.0.0.0:8443", "127.0.0.1:8000"]);
    // No certificate: plain, as before.
    let plain = load_text("tls-none", "bind = [\"127.0.0.1:8000\"]\n");
    assert_eq!(shown(&plain), ["127.0.0.1:8000"]);
}

#[test]
fn preload_app_needs_a_python_app() {
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let python = env(&[("FORKD_PRELOAD_APP", "true"), ("FORKD_APP", "app.main:app")]);
    assert!(load(None, &[], &python).unwrap().preload_app);
    for bad in [
        env(&[("FORKD_PRELOAD_APP", "true"), ("FORKD_APP", "hello")]),
        env(&[
            ("FORKD_PRELOAD_APP", "true"),
            ("FORKD_APP", "app.main:app"),
            ("FORKD_EXEC_COMMAND", "uvicorn,app:app"),
        ]),
    ] {
        let e = load(None, &[], &bad).unwrap_err().to_string();
        assert!(e.contains("key `preload_app`"), "{e}");
    }
    let off = env(&[("FORKD_PRELOAD_APP", "false"), ("FORKD_APP", "hello")]);
    assert!(!load(None, &[], &off).unwrap().preload_app);
}
