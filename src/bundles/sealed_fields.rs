//! The secrets inside a backend's own part of a bundle. A plugin's JSON part names, in its
//! top-level `"sealed"` list, the JSON pointers of the string values that may hold a secret (an
//! Airflow variable's value, a connection's `extra`). The bundle carries each of them sealed
//! with the master key, as its other secrets are (or re-sealed for a recipient's key), and the
//! import opens them before the part reaches the plugin again. Sealed values differ between
//! two exports (a fresh nonce each), so bundles are compared without them.

use serde_json::Value;

use crate::error::{AppError, AppResult};

/// The top-level key of a JSON part that lists its sealed pointers.
pub const SEALED: &str = "sealed";

/// What a sealed value of `plugin`'s part at `pointer` is bound to: the tenant, the plugin and
/// the place (a value cannot be moved to another place, plugin or tenant).
pub fn context(tenant_id: &str, plugin: &str, pointer: &str) -> String {
    format!("bundle-part/{tenant_id}/{plugin}{pointer}")
}

/// Applies `change` to every string value a JSON part names as sealed; the part again and the
/// pointers changed. A part that is not JSON, or names nothing, comes back as it was; a named
/// value that is absent or null is left alone.
pub fn map(
    data: &[u8],
    mut change: impl FnMut(&str, &str) -> AppResult<String>,
) -> AppResult<(Vec<u8>, Vec<String>)> {
    let Ok(mut json) = serde_json::from_slice::<Value>(data) else {
        return Ok((data.to_vec(), Vec::new()));
    };
    let pointers: Vec<String> = match json.get(SEALED) {
        Some(Value::Array(list)) => list
            .iter()
            .map(|p| {
                p.as_str().map(str::to_owned).ok_or_else(|| {
                    AppError::invalid(
                        SEALED,
                        "pointer",
                        "lists something other than a JSON pointer",
                    )
                })
            })
            .collect::<AppResult<_>>()?,
        Some(_) => {
            return Err(AppError::invalid(
                SEALED,
                "pointer",
                "is not a list of JSON pointers",
            ));
        }
        None => return Ok((data.to_vec(), Vec::new())),
    };
    let mut changed = Vec::new();
    for pointer in pointers {
        match json.pointer_mut(&pointer) {
            None | Some(Value::Null) => {}
            Some(Value::String(value)) => {
                *value = change(&pointer, value)?;
                changed.push(pointer);
            }
            Some(_) => {
                return Err(AppError::invalid(
                    SEALED,
                    "pointer",
                    format!("names `{pointer}`, which is not a string"),
                ));
            }
        }
    }
    let data = serde_json::to_vec(&json).map_err(AppError::internal)?;
    Ok((data, changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_strings_are_changed_and_nothing_else() {
        let part = br#"{"variables":[{"key":"k","value":"v"},{"key":"n","value":null}],"sealed":["/variables/0/value","/variables/1/value","/gone"]}"#;
        let (data, changed) =
            map(part, |pointer, value| Ok(format!("<{pointer}={value}>"))).unwrap();
        let json: Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(json["variables"][0]["value"], "</variables/0/value=v>");
        assert_eq!(json["variables"][0]["key"], "k");
        assert_eq!(json["variables"][1]["value"], Value::Null);
        assert_eq!(changed, ["/variables/0/value"]);
        let (same, none) = map(b"PK\x03\x04 not json", |_, _| unreachable!()).unwrap();
        assert_eq!(same, b"PK\x03\x04 not json");
        assert!(none.is_empty());
        assert!(map(br#"{"n":1,"sealed":["/n"]}"#, |_, v| Ok(v.into())).is_err());
    }
}
