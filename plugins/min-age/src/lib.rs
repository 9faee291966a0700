//! The min-age plugin: a version is served only once it has been public for a number of days,
//! so a hijacked release has time to be found and pulled before anyone here installs it.
//!
//! Ages come from upstream's `time` entries (when the version was published), never from when
//! sluice fetched it. A version without a readable `time` entry is treated as too young.
//! Young versions are hidden ([`Plugin::hide_versions`]): the host takes them off the package
//! document and points dist-tags at the newest remaining version, so `npm install pkg` resolves
//! to the newest old-enough version, and their tarballs answer 403 with the date they will be
//! served from. The plugin names the moment its next hidden version comes of age, so the host
//! shows that version at that moment.

use std::time::{Duration, SystemTime};

use serde::Deserialize;
use sluice_plugin_api::name::NamePattern;
use sluice_plugin_api::{Hidden, Packument, Plugin, PluginError, Result};

/// The plugin's kind, as written in `kind = "min-age"`.
pub const KIND: &str = "min-age";

const DAY: f64 = 86_400.0;
/// The largest `days` accepted: a century, far from where time arithmetic overflows.
const MAX_DAYS: f64 = 36_500.0;

/// The `[[plugins]]` table of kind `min-age`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinAgeConfig {
    /// How many days a version must have been published before it is served (may be fractional).
    pub days: f64,
    /// Names (`left-pad`) and scopes (`@acme/*`) the rule does not apply to.
    #[serde(default)]
    pub exempt: Vec<String>,
}

/// How old a version is, as far as this plugin is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Age {
    /// Published long enough ago.
    OldEnough,
    /// Published at `published`; served from `available`.
    Young {
        /// When upstream says it was published.
        published: SystemTime,
        /// When it becomes available here.
        available: SystemTime,
    },
    /// Upstream's document has no readable publish time for it: treated as too young.
    Unknown,
}

/// The `min-age` plugin.
#[derive(Debug, Clone)]
pub struct MinAgePlugin {
    days: f64,
    min_age: Duration,
    exempt: Vec<NamePattern>,
}

impl MinAgePlugin {
    /// Build the plugin from its `[[plugins]]` table (without `kind`).
    pub fn from_table(table: &toml::Table) -> Result<Self> {
        let config: MinAgeConfig = sluice_plugin_api::config::from_table(KIND, table)?;
        Self::new(config)
    }

    /// Build the plugin from a parsed config, checking its values.
    pub fn new(config: MinAgeConfig) -> Result<Self> {
        let min_age = Duration::try_from_secs_f64(config.days * DAY)
            .ok()
            .filter(|_| (0.0..=MAX_DAYS).contains(&config.days))
            .ok_or_else(|| {
                PluginError::new(
                    KIND,
                    format!(
                        "days = {}: write a number of days, 0 or more and at most {MAX_DAYS} \
                         (e.g. days = 7)",
                        config.days
                    ),
                )
            })?;
        let exempt = config
            .exempt
            .iter()
            .map(|text| NamePattern::parse(text))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|why| PluginError::new(KIND, format!("exempt: {why}")))?;
        Ok(Self {
            days: config.days,
            min_age,
            exempt,
        })
    }

    /// Whether the rule does not apply to package `name`.
    pub fn is_exempt(&self, name: &str) -> bool {
        self.exempt.iter().any(|pattern| pattern.matches(name))
    }

    /// How old `version` of `packument` is at `now`.
    pub fn age(&self, packument: &Packument, version: &str, now: SystemTime) -> Age {
        let Some(published) = packument.published(version).and_then(parse_time) else {
            return Age::Unknown;
        };
        let available = published + self.min_age;
        if available <= now {
            Age::OldEnough
        } else {
            Age::Young {
                published,
                available,
            }
        }
    }

    /// The versions of `packument` that are too young at `now`, each with the message a
    /// client refused its tarball reads, and when the next of them comes of age.
    pub fn hidden_at(&self, packument: &Packument, now: SystemTime) -> Hidden {
        let mut hidden = Hidden::default();
        let name = packument.name().unwrap_or("");
        if self.is_exempt(name) {
            return hidden;
        }
        for version in packument.versions().into_iter().flat_map(|v| v.keys()) {
            let message = match self.age(packument, version, now) {
                Age::OldEnough => continue,
                Age::Young {
                    published,
                    available,
                } => {
                    hidden.change_at(available);
                    format!(
                        "{name}@{version} was published on {}, less than {} days ago: this \
                         registry serves it from {}",
                        humantime::format_rfc3339_seconds(published),
                        self.days,
                        humantime::format_rfc3339_seconds(available)
                    )
                }
                Age::Unknown => {
                    tracing::warn!(
                        package = %name,
                        version = %version,
                        "min-age: upstream gives no publish time for this version: hidden"
                    );
                    format!(
                        "{name}@{version} has no publish time in the upstream registry's \
                         document, so its age is unknown: this registry only serves versions \
                         published at least {} days ago",
                        self.days
                    )
                }
            };
            hidden.hide(version.as_str(), message);
        }
        if !hidden.is_empty() {
            tracing::debug!(package = %name, versions = hidden.versions.len(), days = self.days, "min-age: hid young versions");
        }
        hidden
    }
}

/// Parse an RFC 3339 UTC time as npm writes it (`2024-05-01T10:00:00.000Z`).
///
/// Other offsets are refused rather than misread, which hides the version (fail closed).
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let suffix = text.get(19..).unwrap_or("");
    let offset_ok =
        suffix.ends_with('Z') || suffix.ends_with("+00:00") || !suffix.contains(['+', '-', 'Z']);
    if !offset_ok {
        return None;
    }
    humantime::parse_rfc3339_weak(text).ok()
}

impl Plugin for MinAgePlugin {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn hide_versions(&self, packument: &Packument, now: SystemTime) -> Result<Hidden> {
        Ok(self.hidden_at(packument, now))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn plugin(toml_text: &str) -> Result<MinAgePlugin> {
        MinAgePlugin::from_table(&toml_text.parse::<toml::Table>().unwrap())
    }

    fn at(text: &str) -> SystemTime {
        parse_time(text).unwrap()
    }

    fn doc(name: &str) -> Packument {
        let value = json!({
            "name": name,
            "dist-tags": {"latest": "1.2.0"},
            "versions": {"1.0.0": {}, "1.1.0": {}, "1.2.0": {}, "1.3.0-rc.1": {}},
            "time": {
                "created": "2024-01-01T00:00:00.000Z",
                "modified": "2024-03-09T00:00:00.000Z",
                "1.0.0": "2024-01-01T00:00:00.000Z",
                "1.1.0": "2024-03-01T00:00:00.000Z",
                "1.2.0": "2024-03-09T00:00:00.000Z",
            },
        });
        Packument::new(value.as_object().unwrap().clone())
    }

    fn hidden_versions(plugin: &MinAgePlugin, doc: &Packument, now: SystemTime) -> Vec<String> {
        plugin
            .hidden_at(doc, now)
            .versions
            .into_iter()
            .map(|(v, _)| v)
            .collect()
    }

    #[test]
    fn young_and_untimed_versions_are_hidden_with_the_date_they_come_of_age() {
        let plugin = plugin("days = 7\n").unwrap();
        let now = at("2024-03-10T00:00:00Z");
        let packument = doc("left-pad");
        let hidden = plugin.hidden_at(&packument, now);
        let versions: Vec<&str> = hidden.versions.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(versions, vec!["1.2.0", "1.3.0-rc.1"]);
        let (_, young) = &hidden.versions[0];
        assert!(
            young.contains("2024-03-09T00:00:00Z") && young.contains("2024-03-16T00:00:00Z"),
            "{young}"
        );
        assert!(hidden.versions[1].1.contains("no publish time"));
        // The answer changes by itself when 1.2.0 comes of age.
        assert_eq!(hidden.until, Some(at("2024-03-16T00:00:00Z")));
        // A week later the version is served.
        assert_eq!(
            hidden_versions(&plugin, &packument, at("2024-03-16T00:00:01Z")),
            vec!["1.3.0-rc.1"]
        );
    }

    #[test]
    fn exempt_names_and_scopes_are_left_alone() {
        let plugin = plugin("days = 7\nexempt = [\"@acme/*\", \"ours\"]\n").unwrap();
        let now = at("2024-03-10T00:00:00Z");
        for name in ["@acme/tool", "ours"] {
            assert!(plugin.hidden_at(&doc(name), now).is_empty());
        }
        assert!(!plugin.hidden_at(&doc("theirs"), now).is_empty());
    }

    #[test]
    fn fractional_days_and_zero_work() {
        let now = at("2024-03-09T13:00:00Z");
        let half = plugin("days = 0.5\n").unwrap();
        assert_eq!(hidden_versions(&half, &doc("x"), now), vec!["1.3.0-rc.1"]);
        let zero = plugin("days = 0\n").unwrap();
        assert_eq!(hidden_versions(&zero, &doc("x"), now), vec!["1.3.0-rc.1"]);
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let cases = [
            ("days = -1\n", "0 or more"),
            ("days = 1e9\n", "at most"),
            ("days = nan\n", "0 or more"),
            ("dayz = 7\n", "dayz"),
            ("days = 7\nexempt = [\"acme/*\"]\n", "scope"),
            ("days = \"7\"\n", "days"),
            ("exempt = []\n", "days"),
        ];
        for (text, wanted) in cases {
            let error = plugin(text).unwrap_err().to_string();
            assert!(error.contains(wanted), "{text}: {error}");
            assert!(error.starts_with("plugin min-age: "), "{error}");
        }
    }

    #[test]
    fn times_with_other_offsets_are_not_misread() {
        assert!(parse_time("2024-03-09T00:00:00.000Z").is_some());
        assert!(parse_time("2024-03-09T00:00:00+00:00").is_some());
        assert!(parse_time("2024-03-09T00:00:00.123+05:00").is_none());
        assert!(parse_time("yesterday").is_none());
    }
}
