//! The deny file: rules an admin edits while sluice runs, as a [`LiveFile`] (the last good
//! rules stay live).

use std::path::Path;

use sluice_plugin_api::live::{self, LiveFile};

use crate::rules::{parse_file, Rules};

/// The live deny file.
pub type DenyFile = LiveFile<Rules>;

/// Read the deny file at `path`; a missing or unreadable file or any bad line is an error (a
/// deny list that is not what the admin wrote must not start).
pub fn load(path: &Path) -> Result<DenyFile, String> {
    let shown = path.to_path_buf();
    LiveFile::load(
        path,
        "deny file",
        true,
        move |text| match parse_file(text, &shown) {
            Ok(value) => live::Parsed {
                value,
                errors: Vec::new(),
            },
            Err(errors) => live::Parsed {
                value: Rules::default(),
                errors: errors
                    .into_iter()
                    .map(|e| live::LineError {
                        line: e.line,
                        message: e.message,
                    })
                    .collect(),
            },
        },
        Rules::is_empty,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sluice_plugin_api::live::Reload;

    #[test]
    fn a_broken_edit_keeps_the_last_good_rules_and_empty_needs_confirming() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deny");
        std::fs::write(&path, "left-pad\n").unwrap();
        let file = load(&path).unwrap();
        assert_eq!(file.reload(false).unwrap(), Reload::Unchanged);
        std::fs::write(&path, "left-pad\nlodash@\n").unwrap();
        let Reload::Rejected(errors) = file.reload(false).unwrap() else {
            panic!("a bad line was applied");
        };
        assert_eq!(errors[0].line, 2);
        assert!(file.current().package("left-pad").is_some());
        std::fs::write(&path, "").unwrap();
        assert_eq!(file.reload(false).unwrap(), Reload::EmptyPending);
        assert!(file.current().package("left-pad").is_some());
        assert_eq!(file.reload(true).unwrap(), Reload::Applied);
        assert!(file.current().is_empty());
    }

    #[test]
    fn a_missing_or_bad_file_does_not_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deny");
        assert!(load(&path).unwrap_err().contains("deny file"));
        std::fs::write(&path, "ok\n\nnot ok\n").unwrap();
        let error = load(&path).unwrap_err();
        assert!(error.contains("line 3"), "{error}");
    }
}
