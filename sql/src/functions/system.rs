//! `version()` and `pg_advisory_unlock_all()`: what clients ask of the server
//! itself. `version()` says which PostgreSQL we speak as and what we are.

use std::sync::Arc;

use arrow::array::{NullArray, StringArray};
use arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::settings::SERVER_VERSION;

/// The `version()` banner, in PostgreSQL's shape so tools that parse it work.
pub(crate) fn version_banner() -> String {
    format!(
        "PostgreSQL {SERVER_VERSION} on {}-{}, compiled by rustc, 64-bit",
        std::env::consts::ARCH,
        std::env::consts::OS
    )
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct SystemFunc {
    name: &'static str,
    signature: Signature,
}

impl SystemFunc {
    /// `version()`: the server banner.
    pub(crate) fn version() -> SystemFunc {
        SystemFunc {
            name: "version",
            signature: Signature::nullary(Volatility::Stable),
        }
    }

    /// `pg_advisory_unlock_all()`: releases the session's advisory locks. cohortdb
    /// has none, so there is nothing to release; connection poolers call it when
    /// handing a connection back.
    pub(crate) fn advisory_unlock_all() -> SystemFunc {
        SystemFunc {
            name: "pg_advisory_unlock_all",
            signature: Signature::nullary(Volatility::Volatile),
        }
    }
}

impl ScalarUDFImpl for SystemFunc {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(match self.name {
            "version" => DataType::Utf8,
            _ => DataType::Null,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        Ok(ColumnarValue::Array(match self.name {
            "version" => Arc::new(StringArray::from(vec![version_banner(); rows])),
            _ => Arc::new(NullArray::new(rows)),
        }))
    }
}
