//! Container variables the product renamed: one table of both generations' names.
//!
//! With the rename from Stack Auth to Hexclave, a few variables the emulator container reads
//! changed their names. The Hexclave user-data (which these tools follow) writes
//! `STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY`, `STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY` and
//! `NEXT_PUBLIC_HEXCLAVE_PORT_PREFIX`; the released Stack Auth host, its image and its
//! `rotate-secrets` use `STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY`,
//! `STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY` and `NEXT_PUBLIC_STACK_PORT_PREFIX`. An image of
//! either generation may meet a host of either generation, so:
//!
//! - whatever reads one of these variables accepts either name, the two names counting as one
//!   variable ([`same`]);
//! - whatever hands them to the container gives both names the same value ([`aliases`]), the
//!   extra definitions after the original ones, so the original's lines keep their order.
//!
//! [`RENAMED`] is the one list of the pairs; every tool takes the names from here.

/// One renamed variable: its name in each generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renamed {
    /// The Hexclave name (the user-data these tools follow).
    pub hexclave: &'static str,
    /// The Stack Auth name (the released host, its image and its `rotate-secrets`).
    pub stack_auth: &'static str,
}

impl Renamed {
    /// Both names, the Hexclave one first.
    pub const fn names(&self) -> [&'static str; 2] {
        [self.hexclave, self.stack_auth]
    }

    /// Whether `name` is one of the two.
    pub fn has(&self, name: &str) -> bool {
        self.hexclave == name || self.stack_auth == name
    }
}

/// The internal project's publishable client key.
pub const PUBLISHABLE_CLIENT_KEY: Renamed = Renamed {
    hexclave: "STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY",
    stack_auth: "STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY",
};

/// The internal project's secret server key.
pub const SECRET_SERVER_KEY: Renamed = Renamed {
    hexclave: "STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY",
    stack_auth: "STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY",
};

/// The port prefix the container's own ports are built from.
pub const PORT_PREFIX: Renamed = Renamed {
    hexclave: "NEXT_PUBLIC_HEXCLAVE_PORT_PREFIX",
    stack_auth: "NEXT_PUBLIC_STACK_PORT_PREFIX",
};

/// The internal project's super-secret admin key: the same name in both generations.
pub const SUPER_SECRET_ADMIN_KEY: &str = "STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY";

/// Every renamed variable, in the order their extra definitions are written.
pub const RENAMED: [Renamed; 3] = [PUBLISHABLE_CLIENT_KEY, SECRET_SERVER_KEY, PORT_PREFIX];

/// The pair `name` belongs to, if it was renamed.
pub fn renamed(name: &str) -> Option<&'static Renamed> {
    RENAMED.iter().find(|pair| pair.has(name))
}

/// Whether `a` and `b` name the same variable: equal, or the two names of one pair.
pub fn same(a: &str, b: &str) -> bool {
    a == b || renamed(a).is_some_and(|pair| pair.has(b))
}

/// `name`, followed by ` (or OTHER)` when it was renamed: for messages listing what is accepted.
pub fn either(name: &str) -> String {
    match renamed(name) {
        Some(pair) => {
            let other = if pair.hexclave == name {
                pair.stack_auth
            } else {
                pair.hexclave
            };
            format!("{name} (or {other})")
        }
        None => name.to_string(),
    }
}

/// The definitions to append to `entries` so that both names of every renamed pair end with the
/// same value.
///
/// `entries` are `(name, value)` in the order a reader takes them, the last definition of a name
/// winning (a docker env file; docker's `--env-file`s followed by its `-e`s). For every pair
/// defined under either name, the pair's value is the last definition under either name, and a
/// name whose own last definition is missing or different gets it. The result is in the order of
/// [`RENAMED`], the Hexclave name first; it is empty when nothing renamed is defined.
pub fn aliases<'n, 'v>(
    entries: impl IntoIterator<Item = (&'n str, &'v str)>,
) -> Vec<(&'static str, String)> {
    let entries: Vec<(&str, &str)> = entries.into_iter().collect();
    let last = |found: &dyn Fn(&str) -> bool| {
        entries
            .iter()
            .rev()
            .find(|(name, _)| found(name))
            .map(|&(_, value)| value)
    };
    let mut extra = Vec::new();
    for pair in &RENAMED {
        let Some(value) = last(&|name| pair.has(name)) else {
            continue;
        };
        for name in pair.names() {
            if last(&|n| n == name) != Some(value) {
                extra.push((name, value.to_string()));
            }
        }
    }
    extra
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_distinct_names() {
        let mut all: Vec<&str> = RENAMED.iter().flat_map(Renamed::names).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 2 * RENAMED.len());
        assert!(same(PORT_PREFIX.stack_auth, PORT_PREFIX.hexclave));
        assert!(same("CRON_SECRET", "CRON_SECRET"));
        assert!(!same(PORT_PREFIX.hexclave, SECRET_SERVER_KEY.hexclave));
        assert_eq!(
            either(SECRET_SERVER_KEY.stack_auth),
            "STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY (or \
             STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY)"
        );
        assert_eq!(either("CRON_SECRET"), "CRON_SECRET");
    }

    #[test]
    fn the_other_name_gets_the_last_value_of_either() {
        assert_eq!(aliases([("A", "1"), ("CRON_SECRET", "2")]), vec![]);
        // One name only: the other is added.
        assert_eq!(
            aliases([
                ("NEXT_PUBLIC_STACK_PORT_PREFIX", "81"),
                ("STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY", "k"),
            ]),
            vec![
                (
                    "STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY",
                    "k".to_string()
                ),
                ("NEXT_PUBLIC_HEXCLAVE_PORT_PREFIX", "81".to_string()),
            ]
        );
        // Both, equal: nothing to add.
        assert_eq!(
            aliases([
                ("NEXT_PUBLIC_STACK_PORT_PREFIX", "81"),
                ("NEXT_PUBLIC_HEXCLAVE_PORT_PREFIX", "81"),
            ]),
            vec![]
        );
        // Both, different: the later definition wins for both names.
        assert_eq!(
            aliases([
                ("NEXT_PUBLIC_STACK_PORT_PREFIX", "70"),
                ("NEXT_PUBLIC_HEXCLAVE_PORT_PREFIX", "81"),
            ]),
            vec![("NEXT_PUBLIC_STACK_PORT_PREFIX", "81".to_string())]
        );
        // A name defined twice: its last definition counts.
        assert_eq!(
            aliases([
                ("NEXT_PUBLIC_HEXCLAVE_PORT_PREFIX", "70"),
                ("NEXT_PUBLIC_STACK_PORT_PREFIX", "81"),
                ("NEXT_PUBLIC_HEXCLAVE_PORT_PREFIX", "81"),
            ]),
            vec![]
        );
        assert_eq!(
            aliases([
                ("NEXT_PUBLIC_HEXCLAVE_PORT_PREFIX", "81"),
                ("NEXT_PUBLIC_STACK_PORT_PREFIX", "81"),
                ("NEXT_PUBLIC_HEXCLAVE_PORT_PREFIX", "70"),
            ]),
            vec![("NEXT_PUBLIC_STACK_PORT_PREFIX", "70".to_string())]
        );
    }
}
