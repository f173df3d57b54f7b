//! PostgreSQL's system catalogs (`pg_catalog.pg_class`, `pg_attribute`,
//! `pg_type`, ...) as DataFusion tables built from cohortdb's own catalog, so
//! that psql's `\d` commands, JDBC `DatabaseMetaData`, SQLAlchemy's inspector and
//! BI tools find the tables, columns and types they look for.
//!
//! Each relation is declared once in [`RELATIONS`] with its PostgreSQL column
//! list and a function giving its rows; it is rebuilt from the current catalog
//! whenever a statement names it, so it is never stale. Object identifiers are
//! stable: built-in objects have PostgreSQL's own OIDs, a table's OID is derived
//! from its engine id (fixed at creation), a role's from its name.
//!
//! This module describes objects; it never changes them. The PostgreSQL syntax
//! these clients send that DataFusion lacks is rewritten in [`rewrite`].

pub(crate) mod information_schema;
pub(crate) mod rewrite;
pub(crate) mod types;

use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use cohortdb_engine::Catalog;
use cohortdb_engine::roles::{Object, Privilege};
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::datasource::MemTable;

use crate::session::{CATALOG_NAME, SCHEMA_NAME};
use crate::state::State;

/// The schema holding the system catalogs.
pub(crate) const PG_CATALOG: &str = "pg_catalog";

/// Namespace OIDs, as in PostgreSQL.
pub(crate) const PG_CATALOG_OID: u32 = 11;
pub(crate) const PUBLIC_OID: u32 = 2200;
pub(crate) const INFORMATION_SCHEMA_OID: u32 = 13_000;
/// The one database.
pub(crate) const DATABASE_OID: u32 = 5;
/// The role that owns every object: cohortdb does not model ownership, so the
/// catalog shows everything owned by the database owner, PostgreSQL's bootstrap
/// superuser OID.
pub(crate) const OWNER_OID: u32 = 10;
/// The owner's name, unless a stored role has it.
pub(crate) const OWNER_NAME: &str = "cohortdb";
/// User tables get OIDs from here up, as in PostgreSQL.
const FIRST_USER_OID: u32 = 16_384;
/// Access methods.
const HEAP_AM_OID: u32 = 2;
/// The default collation.
const DEFAULT_COLLATION_OID: u32 = 100;

/// What a catalog relation's rows are built from: a moment's view of the
/// engine catalog and the session.
pub(crate) struct Snapshot {
    pub tables: Vec<Relation>,
    pub roles: Vec<RoleRow>,
    pub functions: Arc<Vec<FunctionRow>>,
    pub settings: Vec<(String, String, String)>,
    pub tags: Arc<cohortdb_engine::tags::Tags>,
    /// The session's policy: tags smaller than its minimum audience size
    /// have NULL sizes.
    pub policy: cohortdb_engine::privacy::Policy,
    /// Every role's grants on tables: (grantee, table, privileges).
    pub table_grants: Vec<(String, String, Vec<Privilege>)>,
}

/// A table as the catalog shows it.
pub(crate) struct Relation {
    pub oid: u32,
    pub name: String,
    pub namespace: u32,
    pub schema: SchemaRef,
    /// Which columns are NOT NULL; built-in relations have every column nullable.
    pub not_null: Vec<bool>,
    /// Bytes its rows take (segment files and memtables); 0 for a system
    /// relation, whose rows are built when read, and a view.
    pub bytes: u64,
    /// A view's query; `None` for a table.
    pub definition: Option<String>,
}

pub(crate) struct RoleRow {
    pub oid: u32,
    pub name: String,
    pub superuser: bool,
    pub login: bool,
}

/// A function a session knows, as `pg_proc` lists it.
#[derive(Debug, Clone)]
pub(crate) struct FunctionRow {
    pub oid: u32,
    pub name: String,
    /// `f` function, `a` aggregate, `w` window.
    pub kind: char,
    /// cohortdb's own functions are in `public`; DataFusion's in `pg_catalog`.
    pub namespace: u32,
    pub arguments: String,
    pub result: String,
}

/// A row of a catalog relation; a NULL cell takes its column's type.
type Row = Vec<ScalarValue>;

/// One system catalog: its name, OID, columns (`name type, ...` in PostgreSQL
/// type names) and rows.
struct CatalogRelation {
    name: &'static str,
    oid: u32,
    columns: &'static str,
    /// `None` for a catalog that is always empty in cohortdb.
    rows: Option<fn(&Snapshot) -> Vec<Row>>,
}

/// Every system catalog, with PostgreSQL's OIDs for them.
const RELATIONS: &[CatalogRelation] = &[
    CatalogRelation {
        name: "pg_namespace",
        oid: 2615,
        columns: "oid oid, nspname name, nspowner oid, nspacl aclitem[]",
        rows: Some(namespace_rows),
    },
    CatalogRelation {
        name: "pg_class",
        oid: 1259,
        columns: "oid oid, relname name, relnamespace oid, reltype oid, reloftype oid, \
                  relowner oid, relam oid, relfilenode oid, reltablespace oid, relpages int4, \
                  reltuples float4, relallvisible int4, reltoastrelid oid, relhasindex bool, \
                  relisshared bool, relpersistence char, relkind char, relnatts int2, \
                  relchecks int2, relhasrules bool, relhastriggers bool, relhassubclass bool, \
                  relrowsecurity bool, relforcerowsecurity bool, relispopulated bool, \
                  relreplident char, relispartition bool, relrewrite oid, relacl aclitem[], \
                  reloptions text[], relpartbound text",
        rows: Some(class_rows),
    },
    CatalogRelation {
        name: "pg_attribute",
        oid: 1249,
        columns: "attrelid oid, attname name, atttypid oid, attstattarget int4, attlen int2, \
                  attnum int2, attndims int4, attcacheoff int4, atttypmod int4, attbyval bool, \
                  attalign char, attstorage char, attcompression char, attnotnull bool, \
                  atthasdef bool, atthasmissing bool, attidentity char, attgenerated char, \
                  attisdropped bool, attislocal bool, attinhcount int4, attcollation oid, \
                  attacl aclitem[], attoptions text[], attfdwoptions text[]",
        rows: Some(attribute_rows),
    },
    CatalogRelation {
        name: "pg_type",
        oid: 1247,
        columns: "oid oid, typname name, typnamespace oid, typowner oid, typlen int2, \
                  typbyval bool, typtype char, typcategory char, typispreferred bool, \
                  typisdefined bool, typdelim char, typrelid oid, typsubscript regproc, \
                  typelem oid, typarray oid, typinput regproc, typoutput regproc, \
                  typreceive regproc, typsend regproc, typmodin regproc, typmodout regproc, \
                  typanalyze regproc, typalign char, typstorage char, typnotnull bool, \
                  typbasetype oid, typtypmod int4, typndims int4, typcollation oid, \
                  typdefaultbin text, typdefault text, typacl aclitem[]",
        rows: Some(type_rows),
    },
    CatalogRelation {
        name: "pg_database",
        oid: 1262,
        columns: "oid oid, datname name, datdba oid, encoding int4, datlocprovider char, \
                  datistemplate bool, datallowconn bool, datconnlimit int4, \
                  dattablespace oid, datcollate text, datctype text, daticulocale text, \
                  daticurules text, datcollversion text, datacl aclitem[]",
        rows: Some(database_rows),
    },
    CatalogRelation {
        name: "pg_roles",
        oid: 0,
        columns: "rolname name, rolsuper bool, rolinherit bool, rolcreaterole bool, \
                  rolcreatedb bool, rolcanlogin bool, rolreplication bool, rolconnlimit int4, \
                  rolpassword text, rolvaliduntil timestamptz, rolbypassrls bool, \
                  rolconfig text[], oid oid",
        rows: Some(roles_rows),
    },
    CatalogRelation {
        name: "pg_user",
        oid: 0,
        columns: "usename name, usesysid oid, usecreatedb bool, usesuper bool, userepl bool, \
                  usebypassrls bool, passwd text, valuntil timestamptz, useconfig text[]",
        rows: Some(user_rows),
    },
    CatalogRelation {
        name: "pg_auth_members",
        oid: 1261,
        columns: "oid oid, roleid oid, member oid, grantor oid, admin_option bool, \
                  inherit_option bool, set_option bool",
        rows: None,
    },
    CatalogRelation {
        name: "pg_am",
        oid: 2601,
        columns: "oid oid, amname name, amhandler regproc, amtype char",
        rows: Some(am_rows),
    },
    CatalogRelation {
        name: "pg_index",
        oid: 2610,
        columns: "indexrelid oid, indrelid oid, indnatts int2, indnkeyatts int2, \
                  indisunique bool, indnullsnotdistinct bool, indisprimary bool, \
                  indisexclusion bool, indimmediate bool, indisclustered bool, \
                  indisvalid bool, indcheckxmin bool, indisready bool, indislive bool, \
                  indisreplident bool, indkey int2vector, indcollation oidvector, \
                  indclass oidvector, indoption int2vector, indexprs text, indpred text",
        rows: None,
    },
    CatalogRelation {
        name: "pg_constraint",
        oid: 2606,
        columns: "oid oid, conname name, connamespace oid, contype char, \
                  condeferrable bool, condeferred bool, convalidated bool, conrelid oid, \
                  contypid oid, conindid oid, conparentid oid, confrelid oid, \
                  confupdtype char, confdeltype char, confmatchtype char, conislocal bool, \
                  coninhcount int4, connoinherit bool, conkey int2[], confkey int2[], \
                  conpfeqop oid[], conppeqop oid[], conffeqop oid[], confdelsetcols int2[], \
                  conexclop oid[], conbin text",
        rows: None,
    },
    CatalogRelation {
        name: "pg_attrdef",
        oid: 2604,
        columns: "oid oid, adrelid oid, adnum int2, adbin text",
        rows: None,
    },
    CatalogRelation {
        name: "pg_description",
        oid: 2609,
        columns: "objoid oid, classoid oid, objsubid int4, description text",
        rows: None,
    },
    CatalogRelation {
        name: "pg_shdescription",
        oid: 2396,
        columns: "objoid oid, classoid oid, description text",
        rows: None,
    },
    CatalogRelation {
        name: "pg_collation",
        oid: 3456,
        columns: "oid oid, collname name, collnamespace oid, collowner oid, \
                  collprovider char, collisdeterministic bool, collencoding int4, \
                  collcollate text, collctype text, colliculocale text, collicurules text, \
                  collversion text",
        rows: Some(collation_rows),
    },
    CatalogRelation {
        name: "pg_proc",
        oid: 1255,
        columns: "oid oid, proname name, pronamespace oid, proowner oid, prolang oid, \
                  procost float4, prorows float4, provariadic oid, prosupport regproc, \
                  prokind char, prosecdef bool, proleakproof bool, proisstrict bool, \
                  proretset bool, provolatile char, proparallel char, pronargs int2, \
                  pronargdefaults int2, prorettype oid, proargtypes oidvector, \
                  proallargtypes oid[], proargmodes char[], proargnames text[], \
                  proargdefaults text, protrftypes oid[], prosrc text, probin text, \
                  prosqlbody text, proconfig text[], proacl aclitem[]",
        rows: Some(proc_rows),
    },
    CatalogRelation {
        name: "pg_settings",
        oid: 0,
        columns: "name text, setting text, unit text, category text, short_desc text, \
                  extra_desc text, context text, vartype text, source text, min_val text, \
                  max_val text, enumvals text[], boot_val text, reset_val text, \
                  sourcefile text, sourceline int4, pending_restart bool",
        rows: Some(settings_rows),
    },
    CatalogRelation {
        name: "cohortdb_tags",
        oid: 0,
        columns: "name text, source text, table_name text, users int8, bytes int8, \
                  last_refreshed timestamptz, definition text",
        rows: Some(tag_rows),
    },
    CatalogRelation {
        name: "cohortdb_segments",
        oid: 0,
        columns: "name text, frozen bool, users int8, bytes int8, last_refreshed timestamptz, \
                  definition text",
        rows: Some(segment_rows),
    },
    CatalogRelation {
        name: "cohortdb_models",
        oid: 0,
        columns: "name text, method text, seed text, options text, seed_users int8, \
                  population_users int8, tags int8, trained_at timestamptz",
        rows: Some(model_rows),
    },
    CatalogRelation {
        name: "cohortdb_recommenders",
        oid: 0,
        columns: "name text, table_name text, user_column text, item_column text, \
                  weight_column text, time_column text, algorithm text, options text, \
                  users int8, items int8, interactions int8, bytes int8, built_at timestamptz",
        rows: Some(recommender_rows),
    },
    CatalogRelation {
        name: crate::audit::TABLE,
        oid: 0,
        columns: "seq int8, at timestamptz, role text, address text, application text, \
                  command text, statement text, rows int8, duration_ms float8, sqlstate text",
        // Read by SystemSchema::table from the log, for superusers only.
        rows: Some(|_| Vec::new()),
    },
    CatalogRelation {
        name: "cohortdb_pseudonym_keys",
        oid: 0,
        columns: "name text, version int4, created_at timestamptz, rotated_at timestamptz",
        rows: Some(pseudonym_key_rows),
    },
    CatalogRelation {
        name: "pg_tablespace",
        oid: 1213,
        columns: "oid oid, spcname name, spcowner oid, spcacl aclitem[], spcoptions text[]",
        rows: Some(tablespace_rows),
    },
    CatalogRelation {
        name: "pg_tables",
        oid: 0,
        columns: "schemaname name, tablename name, tableowner name, tablespace name, \
                  hasindexes bool, hasrules bool, hastriggers bool, rowsecurity bool",
        rows: Some(tables_rows),
    },
    CatalogRelation {
        name: "pg_views",
        oid: 0,
        columns: "schemaname name, viewname name, viewowner name, definition text",
        rows: Some(views_rows),
    },
    CatalogRelation {
        name: "pg_matviews",
        oid: 0,
        columns: "schemaname name, matviewname name, matviewowner name, tablespace name, \
                  hasindexes bool, ispopulated bool, definition text",
        rows: None,
    },
    CatalogRelation {
        name: "pg_inherits",
        oid: 2611,
        columns: "inhrelid oid, inhparent oid, inhseqno int4, inhdetachpending bool",
        rows: None,
    },
    CatalogRelation {
        name: "pg_policy",
        oid: 3256,
        columns: "oid oid, polname name, polrelid oid, polcmd char, polpermissive bool, \
                  polroles oid[], polqual text, polwithcheck text",
        rows: None,
    },
    CatalogRelation {
        name: "pg_statistic_ext",
        oid: 3381,
        columns: "oid oid, stxrelid oid, stxname name, stxnamespace oid, stxowner oid, \
                  stxstattarget int4, stxkeys int2vector, stxkind char[], stxexprs text",
        rows: None,
    },
    CatalogRelation {
        name: "pg_publication",
        oid: 6104,
        columns: "oid oid, pubname name, pubowner oid, puballtables bool, pubinsert bool, \
                  pubupdate bool, pubdelete bool, pubtruncate bool, pubviaroot bool",
        rows: None,
    },
    CatalogRelation {
        name: "pg_publication_namespace",
        oid: 6237,
        columns: "oid oid, pnpubid oid, pnnspid oid",
        rows: None,
    },
    CatalogRelation {
        name: "pg_publication_rel",
        oid: 6106,
        columns: "oid oid, prpubid oid, prrelid oid, prqual text, prattrs int2vector",
        rows: None,
    },
    CatalogRelation {
        name: "pg_enum",
        oid: 3501,
        columns: "oid oid, enumtypid oid, enumsortorder float4, enumlabel name",
        rows: None,
    },
    CatalogRelation {
        name: "pg_range",
        oid: 3541,
        columns: "rngtypid oid, rngsubtype oid, rngmultitypid oid, rngcollation oid, \
                  rngsubopc oid, rngcanonical regproc, rngsubdiff regproc",
        rows: None,
    },
    CatalogRelation {
        name: "pg_sequence",
        oid: 2224,
        columns: "seqrelid oid, seqtypid oid, seqstart int8, seqincrement int8, \
                  seqmax int8, seqmin int8, seqcache int8, seqcycle bool",
        rows: None,
    },
    CatalogRelation {
        name: "pg_extension",
        oid: 3079,
        columns: "oid oid, extname name, extowner oid, extnamespace oid, \
                  extrelocatable bool, extversion text, extconfig oid[], extcondition text[]",
        rows: None,
    },
    CatalogRelation {
        name: "pg_trigger",
        oid: 2620,
        columns: "oid oid, tgrelid oid, tgparentid oid, tgname name, tgfoid oid, \
                  tgtype int2, tgenabled char, tgisinternal bool, tgconstrrelid oid, \
                  tgconstrindid oid, tgconstraint oid, tgdeferrable bool, \
                  tginitdeferred bool, tgnargs int2, tgattr int2vector, tgqual text",
        rows: None,
    },
    CatalogRelation {
        name: "pg_rewrite",
        oid: 2618,
        columns: "oid oid, rulename name, ev_class oid, ev_type char, ev_enabled char, \
                  is_instead bool, ev_qual text, ev_action text",
        rows: None,
    },
    CatalogRelation {
        name: "pg_depend",
        oid: 2608,
        columns: "classid oid, objid oid, objsubid int4, refclassid oid, refobjid oid, \
                  refobjsubid int4, deptype char",
        rows: None,
    },
    CatalogRelation {
        name: "pg_foreign_table",
        oid: 3118,
        columns: "ftrelid oid, ftserver oid, ftoptions text[]",
        rows: None,
    },
    CatalogRelation {
        name: "pg_opclass",
        oid: 2616,
        columns: "oid oid, opcmethod oid, opcname name, opcnamespace oid, opcowner oid, \
                  opcfamily oid, opcintype oid, opcdefault bool, opckeytype oid",
        rows: None,
    },
    CatalogRelation {
        name: "pg_language",
        oid: 2612,
        columns: "oid oid, lanname name, lanowner oid, lanispl bool, lanpltrusted bool, \
                  lanplcallfoid oid, laninline oid, lanvalidator oid, lanacl aclitem[]",
        rows: Some(language_rows),
    },
    CatalogRelation {
        name: "pg_cast",
        oid: 2605,
        columns: "oid oid, castsource oid, casttarget oid, castfunc oid, castcontext char, \
                  castmethod char",
        rows: None,
    },
    CatalogRelation {
        name: "pg_operator",
        oid: 2617,
        columns: "oid oid, oprname name, oprnamespace oid, oprowner oid, oprkind char, \
                  oprcanmerge bool, oprcanhash bool, oprleft oid, oprright oid, \
                  oprresult oid, oprcom oid, oprnegate oid, oprcode regproc, oprrest regproc, \
                  oprjoin regproc",
        rows: None,
    },
    CatalogRelation {
        name: "pg_event_trigger",
        oid: 3466,
        columns: "oid oid, evtname name, evtevent name, evtowner oid, evtfoid oid, \
                  evtenabled char, evttags text[]",
        rows: None,
    },
    CatalogRelation {
        name: "pg_db_role_setting",
        oid: 2964,
        columns: "setdatabase oid, setrole oid, setconfig text[]",
        rows: None,
    },
    CatalogRelation {
        name: "pg_stat_activity",
        oid: 0,
        columns: "datid oid, datname name, pid int4, usesysid oid, usename name, \
                  application_name text, client_addr text, client_port int4, \
                  backend_start timestamptz, query_start timestamptz, state text, query text",
        rows: None,
    },
];

/// The `pg_catalog` schema of one session.
pub(crate) struct PgCatalogSchema {
    catalog: Arc<Catalog>,
    state: Arc<Mutex<State>>,
    functions: Arc<Vec<FunctionRow>>,
}

/// A schema of relations built from a [`Snapshot`]: `pg_catalog` or
/// `information_schema`.
pub(crate) struct SystemSchema {
    relations: &'static [CatalogRelation],
    source: Arc<PgCatalogSchema>,
}

impl std::fmt::Debug for SystemSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SystemSchema")
    }
}

impl SystemSchema {
    pub(crate) fn pg_catalog(source: Arc<PgCatalogSchema>) -> SystemSchema {
        SystemSchema {
            relations: RELATIONS,
            source,
        }
    }

    pub(crate) fn information_schema(source: Arc<PgCatalogSchema>) -> SystemSchema {
        SystemSchema {
            relations: information_schema::RELATIONS,
            source,
        }
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        self.relations.iter().map(|r| r.name.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(relation) = self.relations.iter().find(|r| r.name == name) else {
            return Ok(None);
        };
        let schema = parse_columns(relation.columns);
        let rows = match relation.name {
            crate::audit::TABLE => self.source.audit_rows()?,
            _ => relation
                .rows
                .map_or_else(Vec::new, |rows| rows(&self.source.snapshot())),
        };
        let batch = batch(&schema, rows)?;
        Ok(Some(Arc::new(MemTable::try_new(
            schema,
            vec![vec![batch]],
        )?)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.relations.iter().any(|r| r.name == name)
    }
}

impl std::fmt::Debug for PgCatalogSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgCatalogSchema")
    }
}

impl PgCatalogSchema {
    pub(crate) fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub(crate) fn new(
        catalog: Arc<Catalog>,
        state: Arc<Mutex<State>>,
        functions: Vec<FunctionRow>,
    ) -> PgCatalogSchema {
        PgCatalogSchema {
            catalog,
            state,
            functions: Arc::new(functions),
        }
    }

    /// The rows of `cohortdb_audit`: the audit log, which only a superuser
    /// may read.
    fn audit_rows(&self) -> Result<Vec<Row>> {
        if !self.state.lock().expect("session state lock").superuser() {
            return Err(DataFusionError::External(Box::new(
                crate::error::Error::PermissionDenied {
                    message: format!("permission denied for table {}", crate::audit::TABLE),
                },
            )));
        }
        let records = self
            .catalog
            .audit()
            .records()
            .map_err(|e| DataFusionError::External(Box::new(crate::error::Error::from(e))))?;
        let optional = |value: Option<Arc<str>>| value.map_or(NULL, |v| text(&*v));
        let count = |value: Option<u64>| ScalarValue::Int64(value.map(|n| n as i64));
        Ok(records
            .into_iter()
            .map(|(seq, r)| {
                vec![
                    ScalarValue::Int64(Some(seq as i64)),
                    refreshed(r.at_micros),
                    text(&*r.role),
                    optional(r.address),
                    optional(r.application),
                    text(r.command),
                    optional(r.statement),
                    count(r.rows),
                    ScalarValue::Float64(Some(r.duration_micros as f64 / 1000.0)),
                    r.sqlstate.map_or(NULL, text),
                ]
            })
            .collect())
    }

    /// What every relation is built from, read now.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut tables: Vec<Relation> = self
            .catalog
            .table_names()
            .into_iter()
            .filter_map(|name| self.catalog.table(&name).ok())
            .map(|table| Relation {
                oid: table_oid(table.id()),
                name: table.name().to_string(),
                namespace: PUBLIC_OID,
                schema: table.schema(),
                not_null: table.columns().iter().map(|c| !c.nullable).collect(),
                bytes: table.snapshot().bytes(),
                definition: None,
            })
            .collect();
        tables.extend(self.catalog.tags().views.values().map(|view| {
            let fields: Vec<Field> = view
                .columns
                .iter()
                .map(|c| {
                    let data_type = c.data_type.parse().unwrap_or(DataType::Utf8);
                    Field::new(&c.name, data_type, true)
                })
                .collect();
            Relation {
                oid: view_oid(&view.name),
                name: view.name.clone(),
                namespace: PUBLIC_OID,
                not_null: vec![false; fields.len()],
                schema: Arc::new(Schema::new(fields)),
                bytes: 0,
                definition: Some(view.query.clone()),
            }
        }));
        tables.extend(RELATIONS.iter().filter(|r| r.oid != 0).map(|r| {
            let schema = parse_columns(r.columns);
            Relation {
                oid: r.oid,
                name: r.name.to_string(),
                namespace: PG_CATALOG_OID,
                not_null: vec![false; schema.fields().len()],
                schema,
                bytes: 0,
                definition: None,
            }
        }));
        let (settings, policy) = {
            let state = self.state.lock().expect("session state lock");
            (
                state.settings.all(),
                crate::privacy::policy(&self.catalog, &state),
            )
        };
        let roles = self.catalog.roles();
        let table_grants = roles
            .iter()
            .flat_map(|role| {
                role.grants.iter().filter_map(|grant| match &grant.object {
                    Object::Table(table) => Some((
                        role.name.clone(),
                        table.clone(),
                        grant.privileges.iter().copied().collect(),
                    )),
                    _ => None,
                })
            })
            .collect();
        Snapshot {
            policy,
            tables,
            table_grants,
            roles: role_rows(roles),
            functions: Arc::clone(&self.functions),
            settings,
            tags: self.catalog.tags(),
        }
    }
}

/// Whether `name` is a system catalog (so an unqualified reference means it).
pub(crate) fn is_catalog_relation(name: &str) -> bool {
    RELATIONS.iter().any(|r| r.name == name)
}

/// Whether `name` is a system catalog that is always empty in cohortdb (no
/// indexes, constraints, policies, publications, ...).
pub(crate) fn is_empty_relation(name: &str) -> bool {
    RELATIONS.iter().any(|r| r.name == name && r.rows.is_none())
}

/// The OID of the table with engine id `id`.
pub(crate) fn table_oid(id: u64) -> u32 {
    FIRST_USER_OID.saturating_add(u32::try_from(id).unwrap_or(u32::MAX - FIRST_USER_OID))
}

/// A stored role's OID: the owner's for a role named like the owner, else a
/// hash of the name above the user range, so it stays the same across restarts.
pub(crate) fn role_oid(name: &str) -> u32 {
    if name == OWNER_NAME {
        return OWNER_OID;
    }
    let hash = cohortdb_engine::stats::assignment::fnv1a32(name);
    0x4000_0000 | (hash & 0x3fff_ffff)
}

/// A view's OID, from its name: stable across restarts, above the range of
/// tables and below that of functions.
pub(crate) fn view_oid(name: &str) -> u32 {
    let hash = cohortdb_engine::stats::assignment::fnv1a32(name);
    0x1000_0000 | (hash & 0x0fff_ffff)
}

/// A function's OID, from its name: stable across restarts, above the range of
/// tables and below that of roles.
pub(crate) fn function_oid(name: &str) -> u32 {
    let hash = cohortdb_engine::stats::assignment::fnv1a32(name);
    0x2000_0000 | (hash & 0x1fff_ffff)
}

fn role_rows(roles: Vec<cohortdb_engine::roles::Role>) -> Vec<RoleRow> {
    let mut roles: Vec<RoleRow> = roles
        .into_iter()
        .map(|r| RoleRow {
            oid: role_oid(&r.name),
            name: r.name,
            superuser: r.superuser,
            login: r.login,
        })
        .collect();
    if !roles.iter().any(|r| r.oid == OWNER_OID) {
        roles.push(RoleRow {
            oid: OWNER_OID,
            name: OWNER_NAME.to_string(),
            superuser: true,
            login: false,
        });
    }
    roles.sort_by(|a, b| a.name.cmp(&b.name));
    roles
}

/// The Arrow type of a PostgreSQL catalog column type.
fn column_type(pg: &str) -> DataType {
    if let Some(element) = pg.strip_suffix("[]") {
        return list_of(column_type(element));
    }
    match pg {
        "oid" => DataType::UInt32,
        "bool" => DataType::Boolean,
        "int2" => DataType::Int16,
        "int4" => DataType::Int32,
        "int8" => DataType::Int64,
        "float4" => DataType::Float32,
        "int2vector" => list_of(DataType::Int16),
        "oidvector" => list_of(DataType::UInt32),
        "timestamptz" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        // name, char, text, regproc and aclitem all read as text.
        _ => DataType::Utf8,
    }
}

fn list_of(element: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(element, true)))
}

/// The schema of a column list `name type, ...`.
fn parse_columns(columns: &str) -> SchemaRef {
    let fields: Vec<Field> = columns
        .split(',')
        .map(|column| {
            let (name, pg) = column
                .trim()
                .split_once(' ')
                .expect("catalog columns are `name type`");
            let pg = pg.trim();
            let field = Field::new(name, column_type(pg), true);
            // Text types other than text keep their name for clients; regproc
            // and aclitem stay text, as their binary forms are not text.
            if matches!(pg, "name" | "char" | "varchar") {
                field.with_metadata([(types::PG_TYPE_METADATA.to_string(), pg.to_string())].into())
            } else {
                field
            }
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Rows of scalar values as a batch of `schema`; a NULL cell takes its
/// column's type.
fn batch(schema: &SchemaRef, rows: Vec<Row>) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let cells = rows.iter().map(|row| {
                let cell = &row[i];
                if cell.is_null() {
                    ScalarValue::try_from(field.data_type())
                } else {
                    cell.cast_to(field.data_type())
                }
            });
            let cells: Vec<ScalarValue> = cells.collect::<Result<_>>()?;
            if cells.is_empty() {
                Ok(arrow::array::new_empty_array(field.data_type()))
            } else {
                ScalarValue::iter_to_array(cells)
            }
        })
        .collect::<Result<_>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

fn oid(v: u32) -> ScalarValue {
    ScalarValue::UInt32(Some(v))
}

fn text(v: impl Into<String>) -> ScalarValue {
    ScalarValue::Utf8(Some(v.into()))
}

fn flag(v: bool) -> ScalarValue {
    ScalarValue::Boolean(Some(v))
}

fn int2(v: i16) -> ScalarValue {
    ScalarValue::Int16(Some(v))
}

fn int4(v: i32) -> ScalarValue {
    ScalarValue::Int32(Some(v))
}

const NULL: ScalarValue = ScalarValue::Null;

fn namespace_rows(_: &Snapshot) -> Vec<Row> {
    [
        (PG_CATALOG_OID, PG_CATALOG),
        (PUBLIC_OID, SCHEMA_NAME),
        (INFORMATION_SCHEMA_OID, "information_schema"),
    ]
    .into_iter()
    .map(|(o, name)| vec![oid(o), text(name), oid(OWNER_OID), NULL])
    .collect()
}

fn class_rows(s: &Snapshot) -> Vec<Row> {
    s.tables
        .iter()
        .map(|t| {
            vec![
                oid(t.oid),
                text(&t.name),
                oid(t.namespace),
                oid(0),
                oid(0),
                oid(OWNER_OID),
                oid(HEAP_AM_OID),
                oid(t.oid),
                oid(0),
                int4(0),
                ScalarValue::Float32(Some(-1.0)),
                int4(0),
                oid(0),
                flag(false),
                flag(false),
                text("p"),
                text(if t.definition.is_some() { "v" } else { "r" }),
                int2(i16::try_from(t.schema.fields().len()).unwrap_or(i16::MAX)),
                int2(0),
                flag(false),
                flag(false),
                flag(false),
                flag(false),
                flag(false),
                flag(true),
                text("d"),
                flag(false),
                oid(0),
                table_acl(s, &t.name),
                NULL,
                NULL,
            ]
        })
        .collect()
}

/// A table's `relacl`: NULL (the owner's default) until something on it is
/// granted, then the owner's and each grantee's privileges as PostgreSQL
/// writes them (`ana=r/cohortdb`: `a` INSERT, `r` SELECT, `w` UPDATE, `d`
/// DELETE, granted by the owner).
fn table_acl(s: &Snapshot, table: &str) -> ScalarValue {
    let granted: Vec<&(String, String, Vec<Privilege>)> = s
        .table_grants
        .iter()
        .filter(|(_, t, _)| t == table)
        .collect();
    if granted.is_empty() {
        return NULL;
    }
    let owner = owner_name(&s.roles);
    let mut items = vec![text(format!("{owner}=arwd/{owner}"))];
    for (grantee, _, privileges) in granted {
        let letters: String = [
            (Privilege::Insert, 'a'),
            (Privilege::Select, 'r'),
            (Privilege::Update, 'w'),
            (Privilege::Delete, 'd'),
        ]
        .iter()
        .filter(|(p, _)| privileges.contains(p))
        .map(|(_, letter)| *letter)
        .collect();
        items.push(text(format!("{grantee}={letters}/{owner}")));
    }
    ScalarValue::List(ScalarValue::new_list_nullable(&items, &DataType::Utf8))
}

fn attribute_rows(s: &Snapshot) -> Vec<Row> {
    let mut rows = Vec::new();
    for table in &s.tables {
        for (i, field) in table.schema.fields().iter().enumerate() {
            let type_oid = types::field_type_oid(field);
            let pg = types::by_oid(type_oid).expect("columns map to listed types");
            let collation = if pg.category == 'S' {
                DEFAULT_COLLATION_OID
            } else {
                0
            };
            rows.push(vec![
                oid(table.oid),
                text(field.name()),
                oid(type_oid),
                int4(-1),
                int2(pg.len),
                int2(i16::try_from(i + 1).unwrap_or(i16::MAX)),
                int4(i32::from(pg.category == 'A')),
                int4(-1),
                int4(types::type_modifier(field.data_type())),
                flag(pg.len > 0 && pg.len <= 8),
                text(if pg.len == 8 { "d" } else { "i" }),
                text(if pg.len > 0 { "p" } else { "x" }),
                text(""),
                flag(table.not_null[i]),
                flag(false),
                flag(false),
                text(""),
                text(""),
                flag(false),
                flag(true),
                int4(0),
                oid(collation),
                NULL,
                NULL,
                NULL,
            ]);
        }
    }
    rows
}

fn type_rows(_: &Snapshot) -> Vec<Row> {
    types::TYPES
        .iter()
        .map(|t| {
            let pseudo = t.category == 'P' || t.category == 'X';
            // Arrays read and write through array_in/array_out, as in PostgreSQL.
            let io = |suffix: &str| match t.name.strip_prefix('_') {
                Some(_) => text(format!("array_{suffix}")),
                None => text(format!("{}{suffix}", t.name)),
            };
            vec![
                oid(t.oid),
                text(t.name),
                oid(PG_CATALOG_OID),
                oid(OWNER_OID),
                int2(t.len),
                flag(t.len > 0 && t.len <= 8),
                text(if pseudo { "p" } else { "b" }),
                text(t.category.to_string()),
                flag(matches!(
                    t.name,
                    "text" | "float8" | "bool" | "timestamptz" | "oid"
                )),
                flag(true),
                text(","),
                oid(0),
                text(if t.category == 'A' {
                    "array_subscript_handler"
                } else {
                    "-"
                }),
                oid(t.elem),
                oid(t.array),
                io("in"),
                io("out"),
                io("recv"),
                io("send"),
                text("-"),
                text("-"),
                text("-"),
                text(if t.len == 8 { "d" } else { "i" }),
                text(if t.len > 0 { "p" } else { "x" }),
                flag(false),
                oid(0),
                int4(-1),
                int4(0),
                oid(if t.category == 'S' {
                    DEFAULT_COLLATION_OID
                } else {
                    0
                }),
                NULL,
                NULL,
                NULL,
            ]
        })
        .collect()
}

fn database_rows(_: &Snapshot) -> Vec<Row> {
    vec![vec![
        oid(DATABASE_OID),
        text(CATALOG_NAME),
        oid(OWNER_OID),
        // UTF8
        int4(6),
        text("c"),
        flag(false),
        flag(true),
        int4(-1),
        oid(1663),
        text("C.UTF-8"),
        text("C.UTF-8"),
        NULL,
        NULL,
        NULL,
        NULL,
    ]]
}

fn roles_rows(s: &Snapshot) -> Vec<Row> {
    s.roles
        .iter()
        .map(|r| {
            vec![
                text(&r.name),
                flag(r.superuser),
                flag(true),
                flag(r.superuser),
                flag(r.superuser),
                flag(r.login),
                flag(false),
                int4(-1),
                text("********"),
                NULL,
                flag(r.superuser),
                NULL,
                oid(r.oid),
            ]
        })
        .collect()
}

fn user_rows(s: &Snapshot) -> Vec<Row> {
    s.roles
        .iter()
        .filter(|r| r.login)
        .map(|r| {
            vec![
                text(&r.name),
                oid(r.oid),
                flag(r.superuser),
                flag(r.superuser),
                flag(false),
                flag(r.superuser),
                text("********"),
                NULL,
                NULL,
            ]
        })
        .collect()
}

fn am_rows(_: &Snapshot) -> Vec<Row> {
    vec![
        vec![
            oid(HEAP_AM_OID),
            text("heap"),
            text("heap_tableam_handler"),
            text("t"),
        ],
        vec![oid(403), text("btree"), text("bthandler"), text("i")],
    ]
}

fn collation_rows(_: &Snapshot) -> Vec<Row> {
    [
        (DEFAULT_COLLATION_OID, "default", "d"),
        (950, "C", "c"),
        (951, "POSIX", "c"),
    ]
    .into_iter()
    .map(|(o, name, provider)| {
        vec![
            oid(o),
            text(name),
            oid(PG_CATALOG_OID),
            oid(OWNER_OID),
            text(provider),
            flag(true),
            int4(-1),
            if provider == "c" { text(name) } else { NULL },
            if provider == "c" { text(name) } else { NULL },
            NULL,
            NULL,
            NULL,
        ]
    })
    .collect()
}

fn proc_rows(s: &Snapshot) -> Vec<Row> {
    s.functions
        .iter()
        .map(|f| {
            vec![
                oid(f.oid),
                text(&f.name),
                oid(f.namespace),
                oid(OWNER_OID),
                // internal
                oid(12),
                ScalarValue::Float32(Some(1.0)),
                ScalarValue::Float32(Some(0.0)),
                oid(0),
                text("-"),
                text(f.kind.to_string()),
                flag(false),
                flag(false),
                flag(false),
                flag(false),
                text("i"),
                text("s"),
                int2(0),
                int2(0),
                oid(0),
                NULL,
                NULL,
                NULL,
                NULL,
                NULL,
                NULL,
                text(&f.name),
                NULL,
                NULL,
                NULL,
                NULL,
            ]
        })
        .collect()
}

fn language_rows(_: &Snapshot) -> Vec<Row> {
    [(12, "internal"), (13, "c"), (14, "sql")]
        .into_iter()
        .map(|(o, name)| {
            vec![
                oid(o),
                text(name),
                oid(OWNER_OID),
                flag(false),
                flag(false),
                oid(0),
                oid(0),
                oid(0),
                NULL,
            ]
        })
        .collect()
}

fn settings_rows(s: &Snapshot) -> Vec<Row> {
    s.settings
        .iter()
        .map(|(name, value, description)| {
            let mut row = vec![
                text(name),
                text(value),
                NULL,
                text("cohortdb"),
                text(description),
                NULL,
                text("user"),
                text("string"),
                text("default"),
            ];
            row.extend([NULL, NULL, NULL, NULL, NULL, NULL, NULL, flag(false)]);
            row
        })
        .collect()
}

fn tablespace_rows(_: &Snapshot) -> Vec<Row> {
    [(1663, "pg_default"), (1664, "pg_global")]
        .into_iter()
        .map(|(o, name)| vec![oid(o), text(name), oid(OWNER_OID), NULL, NULL])
        .collect()
}

/// `pg_views`: every view, with its query.
fn views_rows(s: &Snapshot) -> Vec<Row> {
    s.tables
        .iter()
        .filter_map(|t| {
            let definition = t.definition.as_ref()?;
            Some(vec![
                text(SCHEMA_NAME),
                text(&t.name),
                text(owner_name(&s.roles)),
                text(definition),
            ])
        })
        .collect()
}

fn tables_rows(s: &Snapshot) -> Vec<Row> {
    s.tables
        .iter()
        .filter(|t| t.definition.is_none())
        .map(|t| {
            let schema = if t.namespace == PUBLIC_OID {
                SCHEMA_NAME
            } else {
                PG_CATALOG
            };
            vec![
                text(schema),
                text(&t.name),
                text(owner_name(&s.roles)),
                NULL,
                flag(false),
                flag(false),
                flag(false),
                flag(false),
            ]
        })
        .collect()
}

/// `cohortdb_tags`: every column tag (`column=value`, by table) and every
/// stored tag, with its users and the bytes of its bitmaps (a time-bucketed
/// value's days included).
fn tag_rows(s: &Snapshot) -> Vec<Row> {
    let bytes = |bits: &cohortdb_engine::tags::Bits| ScalarValue::Int64(Some(bits.bytes() as i64));
    let mut rows = Vec::new();
    for index in s.tags.tables.values() {
        for column in &index.columns {
            for (key, entry) in column.values.iter() {
                let days: u64 = entry.days.values().map(|b| b.bytes()).sum();
                let total = ScalarValue::Int64(Some((entry.all.bytes() + days) as i64));
                let table = Object::TagIndex(index.table_name.clone());
                let (users, total) = sized(s, table, Some(entry.all.len()), total);
                rows.push(vec![
                    text(format!(
                        "{}={}",
                        column.name,
                        cohortdb_engine::audience::quote_value(&key.to_string())
                    )),
                    text(if index.time.is_some() {
                        "column by day"
                    } else {
                        "column"
                    }),
                    text(&index.table_name),
                    users,
                    total,
                    NULL,
                    NULL,
                ]);
            }
        }
    }
    for tag in s.tags.stored.values().filter(|t| !t.source.is_segment()) {
        let object = Object::Tag(tag.name.clone());
        let (users, bytes) = sized(s, object, Some(tag.bits.len()), bytes(&tag.bits));
        rows.push(vec![
            text(&tag.name),
            text(tag.source.as_str()),
            NULL,
            users,
            bytes,
            refreshed(tag.refreshed_micros),
            text(&tag.definition),
        ]);
    }
    rows
}

/// A tag's user count and bytes as the session may see them: both NULL
/// below its role's minimum audience size (the bytes would tell the count),
/// and when the role may not use the tag (`object`).
fn sized(
    s: &Snapshot,
    object: Object,
    users: Option<u64>,
    bytes: ScalarValue,
) -> (ScalarValue, ScalarValue) {
    let users = users.filter(|_| s.policy.may_use(&object));
    match users.and_then(|n| cohortdb_engine::privacy::reportable(n, &s.policy)) {
        Some(n) => (ScalarValue::Int64(Some(n as i64)), bytes),
        None => (NULL, NULL),
    }
}

/// `cohortdb_segments`: every segment; a dynamic one's users are counted now.
fn segment_rows(s: &Snapshot) -> Vec<Row> {
    let today = crate::functions::today();
    s.tags
        .stored
        .values()
        .filter(|t| t.source.is_segment())
        .map(|tag| {
            let frozen = tag.source == cohortdb_engine::tags::TagSourceKind::Frozen;
            let (users, bytes) = if frozen {
                sized(
                    s,
                    Object::Tag(tag.name.clone()),
                    Some(tag.bits.len()),
                    ScalarValue::Int64(Some(tag.bits.bytes() as i64)),
                )
            } else {
                let users = s
                    .tags
                    .count(
                        &tag.definition,
                        &cohortdb_engine::privacy::Policy::everyone(today),
                    )
                    .ok();
                sized(s, Object::Tag(tag.name.clone()), users, NULL)
            };
            vec![
                text(&tag.name),
                flag(frozen),
                users,
                bytes,
                refreshed(tag.refreshed_micros),
                text(&tag.definition),
            ]
        })
        .collect()
}

/// `cohortdb_models`: every stored model, with the number of tags it weighs.
fn model_rows(s: &Snapshot) -> Vec<Row> {
    s.tags
        .models
        .values()
        .map(|m| {
            let tags: std::collections::BTreeSet<&str> = m
                .components
                .iter()
                .flat_map(|c| c.weights.iter().map(|w| w.tag.as_str()))
                .collect();
            vec![
                text(&m.name),
                text(m.method.name()),
                text(&m.seed),
                text(&m.options),
                ScalarValue::Int64(Some(m.seed_users as i64)),
                ScalarValue::Int64(Some(m.population_users as i64)),
                ScalarValue::Int64(Some(tags.len() as i64)),
                refreshed(m.trained_micros),
            ]
        })
        .collect()
}

/// `cohortdb_recommenders`: every recommender, what it is built from, its
/// sizes and when it was built.
fn recommender_rows(s: &Snapshot) -> Vec<Row> {
    s.tags
        .recommenders
        .values()
        .map(|r| {
            let e = &r.entry;
            let d = &e.definition;
            let count = |n: u64| ScalarValue::Int64(Some(n as i64));
            vec![
                text(&e.name),
                text(&d.table),
                text(&d.user),
                text(&d.item),
                d.weight.as_deref().map_or(NULL, text),
                d.time.as_deref().map_or(NULL, text),
                text(&d.algorithm),
                text(&d.options),
                count(e.users),
                count(e.items),
                count(e.interactions),
                count(e.bytes),
                refreshed(e.built_micros),
            ]
        })
        .collect()
}

/// `cohortdb_pseudonym_keys`: every pseudonym key, without its secret.
fn pseudonym_key_rows(s: &Snapshot) -> Vec<Row> {
    s.tags
        .privacy
        .pseudonym_keys
        .iter()
        .map(|(name, key)| {
            vec![
                text(name),
                ScalarValue::Int32(Some(key.version as i32)),
                refreshed(key.created_micros),
                refreshed(key.rotated_micros),
            ]
        })
        .collect()
}

fn refreshed(micros: i64) -> ScalarValue {
    ScalarValue::TimestampMicrosecond(Some(micros), Some("UTC".into()))
}

/// The name of the role that owns every object.
pub(crate) fn owner_name(roles: &[RoleRow]) -> String {
    roles
        .iter()
        .find(|r| r.oid == OWNER_OID)
        .map_or_else(|| OWNER_NAME.to_string(), |r| r.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_relation_builds() {
        let catalog = Arc::new(Catalog::in_memory());
        let schema = PgCatalogSchema::new(catalog, Arc::new(Mutex::new(State::default())), vec![]);
        let snapshot = schema.snapshot();
        for relation in RELATIONS {
            let columns = parse_columns(relation.columns);
            let rows = relation.rows.map_or_else(Vec::new, |rows| rows(&snapshot));
            let batch = batch(&columns, rows).expect(relation.name);
            assert_eq!(batch.schema(), columns, "{}", relation.name);
        }
    }

    #[test]
    fn role_oids_are_stable_and_outside_the_table_range() {
        assert_eq!(role_oid(OWNER_NAME), OWNER_OID);
        assert_eq!(role_oid("analyst"), role_oid("analyst"));
        assert_ne!(role_oid("analyst"), role_oid("marketer"));
        assert!(role_oid("analyst") >= 0x4000_0000);
    }
}
