//! VERSION: the spec versions portfwd speaks.
use super::types::SUPPORTED_VERSIONS;

pub fn run(stdin: &[u8]) -> String {
    let asked = serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .unwrap_or_else(|| SUPPORTED_VERSIONS.last().unwrap().to_string());
    serde_json::json!({
        "cniVersion": asked,
        "supportedVersions": SUPPORTED_VERSIONS,
    })
    .to_string()
        + "\n"
}
