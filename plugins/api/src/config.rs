//! A plugin's configuration: its `[[plugins]]` table read into the plugin's own typed config.

use serde::de::DeserializeOwned;

use crate::{PluginError, Result};

/// Read `table` (the `[[plugins]]` table without `kind`) into `T`.
///
/// Returns an error of plugin `kind` naming the key at fault when it is known, e.g.
/// `days: invalid type: string "7", expected f64`. Make `T` `#[serde(deny_unknown_fields)]`
/// so a misspelt key is refused rather than ignored.
pub fn from_table<T: DeserializeOwned>(kind: &'static str, table: &toml::Table) -> Result<T> {
    // Read through TOML text: its errors carry a span, which names the key at fault.
    let text = toml::to_string(table).map_err(|e| PluginError::new(kind, e.to_string()))?;
    toml::from_str(&text).map_err(|error| {
        let message = error.message().trim();
        // A value's span starts after its key on the same line; a span starting a line is a
        // key's own (already named) or the whole table's (a missing field).
        let key = error.span().and_then(|span| {
            let at = span.start.min(text.len());
            let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            if at == start {
                return None;
            }
            let (key, _) = text[start..].split_once('=')?;
            let key = key.trim();
            (!key.is_empty() && !message.contains(&format!("`{key}`"))).then_some(key)
        });
        match key {
            Some(key) => PluginError::new(kind, format!("{key}: {message}")),
            None => PluginError::new(kind, message),
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        days: f64,
        #[serde(default)]
        names: Vec<String>,
    }

    fn read(text: &str) -> Result<Sample> {
        from_table("sample", &text.parse::<toml::Table>().unwrap())
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(read("days = 7\n").unwrap().days, 7.0);
        let cases = [
            ("days = \"7\"\n", "plugin sample: days: invalid type"),
            (
                "days = 1\nnames = [3]\n",
                "plugin sample: names: invalid type",
            ),
            ("dayz = 1\n", "plugin sample: unknown field `dayz`"),
            ("names = []\n", "plugin sample: missing field `days`"),
        ];
        for (text, wanted) in cases {
            let error = read(text).unwrap_err().to_string();
            assert!(error.starts_with(wanted), "{text}: {error}");
        }
    }
}
