//! Stale image pins: backed-up values that name another image than the
//! bundle carries for that values path.
//!
//! The seed's install pins tags with `--set ui.image.tag=v0.19.0`; `helm
//! get values` returns them, and replaying the backup as-is keeps the old
//! images after an "upgrade". Which values paths hold which image comes
//! from the bundle (its hints resolved against the relocated chart, as sync
//! recorded them in [`CarriedChart::image_values`]), never from key names.
//! A pinned value that differs from the relocated chart's is replaced by
//! the chart's (`--set-string` after the backup, so the user's own `-f` and
//! `--set` of this run still win) unless `--keep-pinned-images`.
use serde::Serialize;
use serde_yaml_ng::Value;

use crate::carried::CarriedChart;
use crate::chart::hints;

/// One values path pinned at install to another image part than the bundle's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StalePin {
    /// `ui.image.tag`
    pub path: String,
    /// What the backed-up values pin.
    pub pinned: String,
    /// What the new chart version (relocated) holds there.
    pub carried: String,
    /// The image the hint renders with the bundle's values.
    pub image: String,
}

/// Roles whose value says which image runs. `global.imageRegistry` is left
/// out: bundler sets it on every upgrade anyway.
const IMAGE_ROLES: &[&str] = &["registry", "repository", "name", "full", "tag", "digest"];

/// The pinned values that name another image than `carried` does.
pub fn stale_pins(user_values: &Value, carried: &CarriedChart) -> Vec<StalePin> {
    let mut out: Vec<StalePin> = Vec::new();
    for iv in &carried.image_values {
        for v in &iv.values {
            if !IMAGE_ROLES.contains(&v.role.as_str()) || v.path == "global.imageRegistry" {
                continue;
            }
            let path: Vec<String> = v.path.split('.').map(str::to_string).collect();
            let Some(pinned) = hints::lookup(user_values, &path).and_then(hints::scalar_string)
            else {
                continue;
            };
            if pinned == v.value || out.iter().any(|p| p.path == v.path) {
                continue;
            }
            out.push(StalePin {
                path: v.path.clone(),
                pinned,
                carried: v.value.clone(),
                image: iv.image.clone(),
            });
        }
    }
    out
}

/// `--set-string PATH=VALUE` for each pin (commas escaped as helm wants).
pub fn set_flags(pins: &[StalePin]) -> Vec<String> {
    let mut f = Vec::new();
    for p in pins {
        f.push("--set-string".to_string());
        f.push(format!("{}={}", p.path, p.carried.replace(',', "\\,")));
    }
    f
}

/// Mark the diff lines of replaced pins: `~ ui.image.tag: "1.1.0" ->
/// "1.2.0" (pinned at install; the bundle carries 1.2.0)`. A line whose new
/// value is not the bundle's (the user's own `--set` of this run won) stays
/// as it is.
pub fn annotate_diff(diff: &mut [String], pins: &[StalePin]) {
    for line in diff.iter_mut() {
        for p in pins {
            let head = format!("~ {}: ", p.path);
            if line.starts_with(&head) && line.ends_with(&format!("-> {:?}", p.carried)) {
                line.push_str(&format!(
                    " (pinned at install; the bundle carries {})",
                    p.carried
                ));
            }
        }
    }
}

/// The lines `--keep-pinned-images` adds to the diff (values kept as pinned).
pub fn kept_lines(pins: &[StalePin]) -> Vec<String> {
    pins.iter()
        .map(|p| {
            format!(
                "= {}: {:?} kept (pinned at install; the bundle carries {}; --keep-pinned-images)",
                p.path, p.pinned, p.carried
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carried::{ImageValues, ValueAt};

    fn carried() -> CarriedChart {
        let at = |path: &str, role: &str, value: &str| ValueAt {
            path: path.into(),
            role: role.into(),
            value: value.into(),
        };
        CarriedChart {
            image_values: vec![
                ImageValues {
                    template: "{{ .ui.image.registry }}/{{ .ui.image.repository }}:{{ .ui.image.tag }}".into(),
                    image: "reg:5000/skoala/ui:v0.19.1".into(),
                    values: vec![
                        at("ui.image.registry", "registry", "reg:5000"),
                        at("ui.image.repository", "repository", "skoala/ui"),
                        at("ui.image.tag", "tag", "v0.19.1"),
                    ],
                },
                ImageValues {
                    template: "{{ .global.imageRegistry }}/{{ .hive.image.repository }}:{{ .hive.image.tag }}".into(),
                    image: "reg:5000/skoala/hive:0.28.2".into(),
                    values: vec![
                        at("global.imageRegistry", "registry", "reg:5000"),
                        at("hive.image.repository", "repository", "skoala/hive"),
                        at("hive.image.tag", "tag", "0.28.2"),
                    ],
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn pins_that_differ_from_the_bundle_are_stale_and_others_are_not() {
        let user: Value = serde_yaml_ng::from_str(
            "ui:\n  image:\n    tag: v0.19.0\nhive:\n  image:\n    tag: 0.28.2\n  configMap: {x: 1}\nglobal:\n  imageRegistry: docker.io\nsesame:\n  image:\n    tag: v9\n",
        )
        .unwrap();
        let pins = stale_pins(&user, &carried());
        assert_eq!(
            pins,
            vec![StalePin {
                path: "ui.image.tag".into(),
                pinned: "v0.19.0".into(),
                carried: "v0.19.1".into(),
                image: "reg:5000/skoala/ui:v0.19.1".into(),
            }],
            "hive pins the bundle's tag; sesame has no hint; global.imageRegistry is bundler's own"
        );
        assert_eq!(
            set_flags(&pins),
            vec!["--set-string", "ui.image.tag=v0.19.1"]
        );
        let mut diff = vec![
            "~ global.imageRegistry: \"docker.io\" -> \"reg:5000\"".to_string(),
            "~ ui.image.tag: \"v0.19.0\" -> \"v0.19.1\"".to_string(),
        ];
        annotate_diff(&mut diff, &pins);
        assert_eq!(
            diff[1],
            "~ ui.image.tag: \"v0.19.0\" -> \"v0.19.1\" (pinned at install; the bundle carries v0.19.1)"
        );
        assert!(!diff[0].contains("pinned"));
    }
}
