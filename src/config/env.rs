//! `FORKD_*` environment variables: which ones set a key, which ones Kubernetes put
//! there (service links, ignored without a word), and which are unknown (ignored with a
//! warning that names the closest key, so a typo is still seen).
//!
//! Kubernetes gives every container, for every Service in its namespace (unless the pod
//! says `enableServiceLinks: false`), variables named after the Service: a Service
//! `forkd-api` with a port `http` 80/TCP gives `FORKD_API_SERVICE_HOST`,
//! `FORKD_API_SERVICE_PORT`, `FORKD_API_SERVICE_PORT_HTTP`, `FORKD_API_PORT`,
//! `FORKD_API_PORT_80_TCP`, and `FORKD_API_PORT_80_TCP_{PROTO,PORT,ADDR}`. A Service
//! named `forkd` or `forkd-...` (the shipped manifest's is `forkd`) lands in forkd's
//! prefix; an error there would crash-loop every pod created after the Service.
//!
//! A variable that is a key's name always sets that key, whatever pattern it matches.

use super::registry::{Key, Print, KEYS};
use super::suggest::suggestion;

/// What one `FORKD_*` variable is to forkd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum EnvVar {
    /// `FORKD_<KEY>`: sets that key.
    Key,
    /// A Kubernetes service-link variable: ignored, no warning.
    ServiceLink,
    /// Names a table set in the config file only (`FORKD_ENV`): ignored, with a warning
    /// that says so.
    Table(&'static str),
    /// Anything else: ignored, with a warning naming the closest key if one is close.
    Unknown { hint: String },
}

/// Classifies `var` (a `FORKD_*` name) against the keys' variable names `known`.
pub(super) fn classify(var: &str, known: &[String]) -> EnvVar {
    if known.iter().any(|name| name == var) {
        return EnvVar::Key;
    }
    if is_service_link(var) {
        return EnvVar::ServiceLink;
    }
    let table = KEYS.iter().find(|k| {
        matches!(k.print, Print::Table(_))
            && var == format!("FORKD_{}", k.name.to_ascii_uppercase())
    });
    match table {
        Some(key) => EnvVar::Table(key.name),
        None => EnvVar::Unknown {
            hint: suggestion(var, known.iter().map(String::as_str)),
        },
    }
}

/// The warnings for the `FORKD_*` variables of `env` that set nothing (service links
/// excepted), one per variable, in `env`'s order.
pub fn warnings(env: &[(String, String)]) -> Vec<String> {
    let known: Vec<String> = KEYS.iter().filter_map(Key::env_var).collect();
    env.iter()
        .filter(|(var, _)| var.starts_with("FORKD_"))
        .filter_map(|(var, _)| match classify(var, &known) {
            EnvVar::Key | EnvVar::ServiceLink => None,
            EnvVar::Table(table) => Some(format!(
                "environment variable {var} is ignored: the [{table}] table is set in the config file only"
            )),
            EnvVar::Unknown { hint } => Some(format!(
                "unknown environment variable {var} is ignored{hint}"
            )),
        })
        .collect()
}

/// Whether `var` has the shape of a variable Kubernetes makes for a Service (see the
/// module doc): `<SVC>_SERVICE_HOST`, `<SVC>_SERVICE_PORT`, `<SVC>_SERVICE_PORT_<NAME>`,
/// `<SVC>_PORT`, `<SVC>_PORT_<N>_<PROTO>` and that followed by `_PROTO`, `_PORT` or
/// `_ADDR`; `<SVC>` is a Service name upper-cased with `-` as `_`, `<NAME>` a port's.
pub fn is_service_link(var: &str) -> bool {
    if let Some(service) = var
        .strip_suffix("_SERVICE_HOST")
        .or_else(|| var.strip_suffix("_SERVICE_PORT"))
        .or_else(|| var.strip_suffix("_PORT"))
    {
        if is_service_name(service) {
            return true;
        }
    }
    // `<SVC>_SERVICE_PORT_<NAME>`: any split where both sides have their shapes.
    let marker = "_SERVICE_PORT_";
    let named_port = var
        .match_indices(marker)
        .any(|(at, _)| is_service_name(&var[..at]) && is_port_name(&var[at + marker.len()..]));
    if named_port {
        return true;
    }
    // `<SVC>_PORT_<N>_<PROTO>[_PROTO|_PORT|_ADDR]`.
    let stripped = ["_PROTO", "_PORT", "_ADDR"]
        .iter()
        .find_map(|suffix| var.strip_suffix(suffix));
    stripped.into_iter().chain([var]).any(|base| {
        let Some(rest) = ["_TCP", "_UDP", "_SCTP"]
            .iter()
            .find_map(|proto| base.strip_suffix(proto))
        else {
            return false;
        };
        let Some((service, number)) = rest.rsplit_once("_PORT_") else {
            return false;
        };
        is_service_name(service) && is_port_number(number)
    })
}

/// A Service name as Kubernetes writes it into a variable name: a DNS label (RFC 1035:
/// a letter, then letters, digits and `-`, ending with a letter or digit, at most 63)
/// upper-cased, `-` as `_`.
fn is_service_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes.first().is_some_and(u8::is_ascii_uppercase)
        && bytes
            .last()
            .is_some_and(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
}

/// A Service port's name as Kubernetes writes it (an IANA service name: at most 15
/// letters, digits and `-`, with a letter), upper-cased, `-` as `_`.
fn is_port_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=15).contains(&bytes.len())
        && bytes.iter().any(u8::is_ascii_uppercase)
        && bytes
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
}

/// A port number 1-65535 as Kubernetes writes it (decimal, no leading zero).
fn is_port_number(text: &str) -> bool {
    !text.starts_with('0')
        && text.bytes().all(|b| b.is_ascii_digit())
        && text.parse::<u16>().is_ok_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// The variables the kubelet makes for a Service (as `envvars.FromServices` does):
    /// its name and its ports as (name, number, protocol).
    fn service_links(service: &str, ports: &[(&str, u16, &str)]) -> Vec<String> {
        let prefix = service.replace('-', "_").to_ascii_uppercase();
        let mut vars = vec![format!("{prefix}_SERVICE_HOST")];
        for (index, (name, number, proto)) in ports.iter().enumerate() {
            if index == 0 {
                vars.push(format!("{prefix}_SERVICE_PORT"));
                vars.push(format!("{prefix}_PORT"));
            }
            if !name.is_empty() {
                vars.push(format!(
                    "{prefix}_SERVICE_PORT_{}",
                    name.replace('-', "_").to_ascii_uppercase()
                ));
            }
            let port = format!("{prefix}_PORT_{number}_{proto}");
            vars.extend([
                format!("{port}_PROTO"),
                format!("{port}_PORT"),
                format!("{port}_ADDR"),
                port,
            ]);
        }
        vars
    }

    fn known() -> Vec<String> {
        KEYS.iter().filter_map(Key::env_var).collect()
    }

    #[test]
    fn kubernetes_service_links_are_ignored_silently() {
        let mut all = service_links("forkd", &[("http", 80, "TCP")]);
        all.extend(service_links(
            "forkd-metrics",
            &[
                ("metrics", 9100, "TCP"),
                ("", 53, "UDP"),
                ("x-y", 65535, "SCTP"),
            ],
        ));
        all.extend(service_links("forkd-api-v2", &[("h2c-9", 8080, "TCP")]));
        for var in &all {
            assert!(is_service_link(var), "{var}");
            assert_eq!(classify(var, &known()), EnvVar::ServiceLink, "{var}");
        }
        let env: Vec<(String, String)> = all.iter().map(|v| (v.clone(), "x".into())).collect();
        assert_eq!(warnings(&env), Vec::<String>::new());
    }

    #[test]
    fn a_keys_name_always_sets_the_key() {
        for var in known() {
            assert_eq!(classify(&var, &known()), EnvVar::Key, "{var}");
        }
        // Even one that has a service link's shape.
        let names = vec![
            "FORKD_API_PORT".to_string(),
            "FORKD_SERVICE_HOST".to_string(),
        ];
        assert!(is_service_link("FORKD_API_PORT"));
        assert_eq!(classify("FORKD_API_PORT", &names), EnvVar::Key);
        assert_eq!(classify("FORKD_SERVICE_HOST", &names), EnvVar::Key);
        assert_eq!(classify("FORKD_OTHER_PORT", &names), EnvVar::ServiceLink);
    }

    #[test]
    fn typos_warn_with_the_closest_key() {
        let env = |var: &str| vec![(var.to_string(), "3".to_string())];
        assert_eq!(
            warnings(&env("FORKD_WORKRES")),
            ["unknown environment variable FORKD_WORKRES is ignored (did you mean `FORKD_WORKERS`?)"]
        );
        assert_eq!(
            warnings(&env("FORKD_LIMITS_MAX_BDY")),
            ["unknown environment variable FORKD_LIMITS_MAX_BDY is ignored (did you mean `FORKD_LIMITS_MAX_BODY`?)"]
        );
        assert_eq!(
            warnings(&env("FORKD_ZZZZZZZZZZZZ")),
            ["unknown environment variable FORKD_ZZZZZZZZZZZZ is ignored"]
        );
        assert_eq!(
            warnings(&env("FORKD_ENV")),
            ["environment variable FORKD_ENV is ignored: the [env] table is set in the config file only"]
        );
        // Not forkd's prefix, or a key: nothing to say.
        assert!(warnings(&env("PATH")).is_empty());
        assert!(warnings(&env("FORKD_WORKERS")).is_empty());
    }

    #[test]
    fn near_misses_of_the_shapes_are_not_service_links() {
        for var in [
            "FORKD_SERVICE_HOSTS",
            "FORKD_SERVICE_PORT_",
            "FORKD_SERVICE_PORT_123", // a port name has a letter
            "FORKD_SERVICE_PORT_ABCDEFGHIJKLMNOP", // 16 > 15
            "FORKD__PORT",            // ends with `-`: not a Service name
            "FORKD_PORT_80",
            "FORKD_PORT_80_HTTP",
            "FORKD_PORT_080_TCP",
            "FORKD_PORT_0_TCP",
            "FORKD_PORT_65536_TCP",
            "FORKD_PORT_80_TCP_HOST",
            "FORKD_PORT_X_TCP",
            "FORKD_WORKRES",
            "FORKD_api_PORT",
            "FORKD_1_PORT", // fine: `forkd-1`
        ] {
            let expected = var == "FORKD_1_PORT";
            assert_eq!(is_service_link(var), expected, "{var}");
        }
        let long = format!("FORKD_{}_PORT", "A".repeat(58));
        assert!(!is_service_link(&long), "64 characters");
        let longest = format!("FORKD_{}_PORT", "A".repeat(57));
        assert!(is_service_link(&longest), "63 characters");
    }
}
