//! `current_setting(name [, missing_ok])` and `set_config(name, value, is_local)`:
//! the settings registry as functions, over the same session state SET and SHOW
//! use.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, BooleanArray, StringArray, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::settings::Scope;
use crate::state::State;

/// Which of the two functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    CurrentSetting,
    SetConfig,
}

#[derive(Debug)]
pub(crate) struct SettingsFunc {
    kind: Kind,
    signature: Signature,
    state: Arc<Mutex<State>>,
}

impl SettingsFunc {
    pub(crate) fn current_setting(state: &Arc<Mutex<State>>) -> SettingsFunc {
        SettingsFunc::new(Kind::CurrentSetting, Volatility::Stable, state)
    }

    pub(crate) fn set_config(state: &Arc<Mutex<State>>) -> SettingsFunc {
        SettingsFunc::new(Kind::SetConfig, Volatility::Volatile, state)
    }

    fn new(kind: Kind, volatility: Volatility, state: &Arc<Mutex<State>>) -> SettingsFunc {
        SettingsFunc {
            kind,
            signature: Signature::user_defined(volatility),
            state: Arc::clone(state),
        }
    }

    fn call(&self, row: &[Option<Arg<'_>>]) -> Result<Option<String>> {
        let mut state = self.state.lock().expect("session state lock");
        let text = |i: usize| match row.get(i) {
            Some(Some(Arg::Text(t))) => Some(*t),
            _ => None,
        };
        let flag = |i: usize| matches!(row.get(i), Some(Some(Arg::Flag(true))));
        let Some(name) = text(0) else {
            return Ok(None);
        };
        match self.kind {
            Kind::CurrentSetting => match state.settings.get(name) {
                Ok(Some(value)) => Ok(Some(value)),
                Ok(None) | Err(crate::Error::UnknownSetting { .. }) if flag(1) => Ok(None),
                Ok(None) => Err(unknown(name)),
                Err(e) => Err(DataFusionError::External(Box::new(e))),
            },
            Kind::SetConfig => {
                let scope = if flag(2) {
                    Scope::Local
                } else {
                    Scope::Session
                };
                let value = text(1).unwrap_or("");
                state
                    .settings
                    .set(name, value, scope)
                    .map(Some)
                    .map_err(|e| DataFusionError::External(Box::new(e)))
            }
        }
    }
}

fn unknown(name: &str) -> DataFusionError {
    DataFusionError::External(Box::new(crate::Error::UnknownSetting {
        name: name.to_string(),
    }))
}

/// One argument of one row.
enum Arg<'a> {
    Text(&'a str),
    Flag(bool),
}

impl PartialEq for SettingsFunc {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && Arc::ptr_eq(&self.state, &other.state)
    }
}

impl Eq for SettingsFunc {}

impl Hash for SettingsFunc {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
        Arc::as_ptr(&self.state).hash(state);
    }
}

impl ScalarUDFImpl for SettingsFunc {
    fn name(&self) -> &str {
        match self.kind {
            Kind::CurrentSetting => "current_setting",
            Kind::SetConfig => "set_config",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match (self.kind, arg_types.len()) {
            (Kind::CurrentSetting, 1) => Ok(vec![DataType::Utf8]),
            (Kind::CurrentSetting, 2) => Ok(vec![DataType::Utf8, DataType::Boolean]),
            (Kind::SetConfig, 3) => Ok(vec![DataType::Utf8, DataType::Utf8, DataType::Boolean]),
            (Kind::CurrentSetting, _) => {
                plan_err!("current_setting(name [, missing_ok]) takes one or two arguments")
            }
            (Kind::SetConfig, _) => {
                plan_err!("set_config(name, value, is_local) takes three arguments")
            }
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays: Vec<ArrayRef> = ColumnarValue::values_to_arrays(&args.args)?;
        let mut out = StringBuilder::new();
        for row in 0..args.number_rows {
            let values: Vec<Option<Arg<'_>>> = arrays
                .iter()
                .map(|a| {
                    if a.is_null(row) {
                        None
                    } else if let Some(s) = a.as_any().downcast_ref::<StringArray>() {
                        Some(Arg::Text(s.value(row)))
                    } else {
                        a.as_any()
                            .downcast_ref::<BooleanArray>()
                            .map(|b| Arg::Flag(b.value(row)))
                    }
                })
                .collect();
            out.append_option(self.call(&values)?);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}
