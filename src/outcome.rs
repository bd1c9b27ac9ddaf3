//! `--json` when a verb fails: CI reads stdout, so a failure prints an
//! object too: `error` {message, kind, exitStatus} beside what the verb had
//! done before it. A verb records its summary so far with [`record`] as it
//! goes; `cli` prints [`failure_json`] when the verb returns an error.
use std::sync::Mutex;

use serde::Serialize;

static DONE: Mutex<Option<serde_json::Value>> = Mutex::new(None);

/// Remember what the running verb has done so far (replaces the last).
pub fn record(done: &impl Serialize) {
    if let Ok(v) = serde_json::to_value(done) {
        *DONE.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
    }
}

/// A short word for the kind of failure, from the typed errors in the chain.
pub fn kind(err: &anyhow::Error) -> &'static str {
    use crate::error::{CredentialError, InputError, RolledBack};
    use crate::oci::registry::SourceDamaged;
    for cause in err.chain() {
        if cause.is::<InputError>() {
            return "input";
        }
        if cause.is::<CredentialError>() {
            return "credentials";
        }
        if cause.is::<SourceDamaged>() {
            return "damaged-bundle";
        }
        if cause.is::<RolledBack>() {
            return "rolled-back";
        }
        if cause.is::<crate::error::NotRolledBack>() {
            return "not-rolled-back";
        }
        if let Some(f) = cause.downcast_ref::<crate::sync::report::Failed>() {
            return f.kind;
        }
    }
    "failure"
}

/// The object printed on stdout for a failed verb run with `--json`: the
/// recorded summary's fields, plus `error`.
pub fn failure_json(err: &anyhow::Error, exit_status: i32) -> serde_json::Value {
    let error = serde_json::json!({
        "message": crate::error::redact(&format!("{err:#}")),
        "kind": kind(err),
        "exitStatus": exit_status,
    });
    let done = DONE.lock().unwrap_or_else(|e| e.into_inner()).take();
    match done {
        Some(serde_json::Value::Object(mut m)) => {
            m.insert("error".into(), error);
            serde_json::Value::Object(m)
        }
        Some(other) => serde_json::json!({ "error": error, "done": other }),
        None => serde_json::json!({ "error": error }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failure_object_carries_what_was_done_and_the_error() {
        record(&serde_json::json!({"imagesPushed": 2, "images": ["a", "b"]}));
        let e = crate::error::input_error("bad flag").context("reading flags");
        let v = failure_json(&e, 2);
        assert_eq!(v["imagesPushed"], 2, "{v}");
        assert_eq!(v["error"]["kind"], "input", "{v}");
        assert_eq!(v["error"]["exitStatus"], 2, "{v}");
        assert_eq!(v["error"]["message"], "reading flags: bad flag", "{v}");
        // Taken: a second failure in the same process has nothing recorded.
        let v = failure_json(&anyhow::anyhow!("x"), 1);
        assert_eq!(
            v,
            serde_json::json!({"error": {"message": "x", "kind": "failure", "exitStatus": 1}})
        );
    }
}
