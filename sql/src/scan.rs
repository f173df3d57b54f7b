//! The physical scan of an engine table: the snapshot's stored batches dealt over
//! partitions, each partition streaming its batches through the engine's
//! [`ScanSpec`] (filter, projection, row ids) lazily, on DataFusion's threads.

use std::fmt;
use std::sync::Arc;

use cohortdb_engine::{ScanSpec, ScanUnit};
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::stream;

use crate::error::to_datafusion;

#[derive(Debug)]
pub(crate) struct EngineScanExec {
    table: String,
    spec: Arc<ScanSpec>,
    partitions: Vec<Vec<ScanUnit>>,
    limit: Option<usize>,
    properties: Arc<PlanProperties>,
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
        }
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
