//! The physical scan of an engine table: the snapshot's stored batches dealt over
//! partitions, each partition streaming its batches through the engine's
//! [`ScanSpec`] (filter, projection, row ids) lazily, on DataFusion's threads.

use std::fmt;
use std::sync::Arc;

use cohortdb_engine::{ScanSpec, ScanUnit};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, ScalarValue, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::stream;

use crate::error::to_datafusion;
use crate::provider::UnboundScan;

#[derive(Debug)]
pub(crate) struct EngineScanExec {
    table: String,
    spec: Arc<ScanSpec>,
    partitions: Vec<Vec<ScanUnit>>,
    limit: Option<usize>,
    properties: Arc<PlanProperties>,
    /// Set on a prepared query's scan whose filters hold parameters: it runs
    /// only once bound to values ([`EngineScanExec::bind`]).
    unbound: Option<Arc<UnboundScan>>,
}

impl EngineScanExec {
    pub fn new(
        table: String,
        spec: ScanSpec,
        units: Vec<ScanUnit>,
        target_partitions: usize,
        limit: Option<usize>,
    ) -> Self {
        let n = target_partitions.max(1).min(units.len().max(1));
        Self::dealt(table, spec, units, n, limit)
    }

    /// A scan of `units` dealt over `n` partitions.
    fn dealt(
        table: String,
        spec: ScanSpec,
        units: Vec<ScanUnit>,
        n: usize,
        limit: Option<usize>,
    ) -> Self {
        let mut partitions = vec![Vec::new(); n];
        for (i, unit) in units.into_iter().enumerate() {
            partitions[i % n].push(unit);
        }
        let properties = PlanProperties::new(
            EquivalenceProperties::new(spec.schema()),
            Partitioning::UnknownPartitioning(n),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        EngineScanExec {
            table,
            spec: Arc::new(spec),
            partitions,
            limit,
            properties: Arc::new(properties),
            unbound: None,
        }
    }

    /// This scan, to be bound to parameter values before it runs.
    pub(crate) fn unbound(mut self, unbound: UnboundScan) -> Self {
        self.unbound = Some(Arc::new(unbound));
        self
    }

    /// The scan with `values[i]` in place of parameter `$(i+1)` in its
    /// filters, over as many partitions as before (the plan above was made
    /// for them); `None` when the filters with those values are not the
    /// engine's to evaluate.
    pub(crate) fn bind(&self, values: &[ScalarValue]) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(unbound) = &self.unbound else {
            return internal_err!("binding a scan of {} that takes no parameters", self.table);
        };
        let Some((spec, units)) = unbound.bind(values)? else {
            return Ok(None);
        };
        Ok(Some(Arc::new(Self::dealt(
            self.table.clone(),
            spec,
            units,
            self.partitions.len(),
            self.limit,
        ))))
    }

    /// Whether the scan's filters hold parameters to bind.
    pub(crate) fn is_unbound(&self) -> bool {
        self.unbound.is_some()
    }
}

impl DisplayAs for EngineScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let batches: usize = self.partitions.iter().map(Vec::len).sum();
        write!(
            f,
            "EngineScanExec: table={}, partitions={}, batches={batches}",
            self.table,
            self.partitions.len()
        )?;
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for EngineScanExec {
    fn name(&self) -> &'static str {
        "EngineScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if self.unbound.is_some() {
            return internal_err!(
                "a scan of {} runs before its parameters are bound",
                self.table
            );
        }
        let units = self.partitions.get(partition).cloned().unwrap_or_default();
        let spec = Arc::clone(&self.spec);
        let mut remaining = self.limit.unwrap_or(usize::MAX);
        let batches = units
            .into_iter()
            .map_while(move |unit| {
                if remaining == 0 {
                    return None;
                }
                Some(spec.apply(&unit).map_err(to_datafusion).map(|batch| {
                    let batch = batch.slice(0, batch.num_rows().min(remaining));
                    remaining -= batch.num_rows();
                    batch
                }))
            })
            // Units the filter emptied produce nothing.
            .filter(|batch| batch.as_ref().map_or(true, |b| b.num_rows() > 0));
        let batches = stream::iter(batches);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.spec.schema(),
            batches,
        )))
    }
}
