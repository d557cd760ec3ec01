//! The CNI error: a code from the spec's table (or 100 and up, portfwd's
//! own), printed on stdout as the JSON the runtime reads.
use serde::Serialize;

/// Codes of the CNI spec's error table.
pub const INCOMPATIBLE_VERSION: u32 = 1;
pub const INVALID_ENV: u32 = 4;
pub const DECODE: u32 = 6;
pub const INVALID_CONFIG: u32 = 7;
pub const TRY_AGAIN: u32 = 11;
/// STATUS (1.1.0): the plugin cannot serve ADD now.
pub const NOT_AVAILABLE: u32 = 50;
/// portfwd's own: a failure while acting.
pub const FAILED: u32 = 100;
/// A host port is published already, or held by a host process.
pub const PORT_TAKEN: u32 = 101;
/// CHECK: a mapping is missing or points elsewhere.
pub const NOT_IN_PLACE: u32 = 102;

#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The JSON of the spec's error result, for `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Out<'a> {
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        serde_json::to_string(&Out {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        })
        .expect("plain data serialises")
    }
}

impl From<portfwd::Error> for CniError {
    fn from(e: portfwd::Error) -> Self {
        use portfwd::Error as E;
        let code = match &e {
            E::PortConflict { .. } | E::PortInUse { .. } | E::DuplicatePort(_) => PORT_TAKEN,
            E::BadSpec { .. } => INVALID_CONFIG,
            _ => FAILED,
        };
        Self::new(code, e.to_string())
    }
}
