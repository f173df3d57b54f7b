//! cohortdb
