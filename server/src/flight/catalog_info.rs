//! The Flight SQL catalog calls (GetCatalogs, GetDbSchemas, GetTables,
//! GetTableTypes, and the empty key tables), answered from the live DataFusion
//! catalog so views and tables added at run time show up at once.

use std::sync::Arc;

use arrow_flight::sql::metadata::GetTablesBuilder;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTableTypes, CommandGetTables};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::SchemaProvider;
use datafusion::catalog::information_schema::InformationSchemaProvider;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;

/// Table types as Flight SQL/JDBC name them.
pub const TABLE_TYPES: [&str; 3] = ["TABLE", "VIEW", "LOCAL TEMPORARY"];

fn flight_err(e: arrow_flight::error::FlightError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

fn table_type_name(t: TableType) -> &'static str {
    match t {
        TableType::Base => "TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

/// GetCatalogs: every catalog of the session.
pub fn catalogs(ctx: &SessionContext) -> Result<RecordBatch> {
    let mut b = arrow_flight::sql::metadata::GetCatalogsBuilder::new();
    let mut names = ctx.catalog_names();
    names.sort();
    for name in names {
        b.append(name);
    }
    b.build().map_err(flight_err)
}

/// GetDbSchemas: every (catalog, schema), filtered as the command asks
/// (an absent catalog means all of them).
pub fn db_schemas(ctx: &SessionContext, cmd: CommandGetDbSchemas) -> Result<RecordBatch> {
    let mut b = cmd.into_builder();
    for (catalog, schema, _) in schemas(ctx) {
        b.append(catalog, schema);
    }
    b.build().map_err(flight_err)
}

/// GetTableTypes.
pub fn table_types() -> Result<RecordBatch> {
    let mut b = CommandGetTableTypes::default().into_builder();
    for t in TABLE_TYPES {
        b.append(t);
    }
    b.build().map_err(flight_err)
}

const INFORMATION_SCHEMA: &str = "information_schema";

/// Every (catalog, schema name, schema), sorted; DataFusion serves
/// `information_schema` in each catalog without listing it, so it is added here.
fn schemas(ctx: &SessionContext) -> Vec<(String, String, Arc<dyn SchemaProvider>)> {
    let state = ctx.state();
    let with_info = state.config().information_schema();
    let mut out = Vec::new();
    for catalog_name in ctx.catalog_names() {
        let Some(catalog) = ctx.catalog(&catalog_name) else {
            continue;
        };
        for schema_name in catalog.schema_names() {
            if let Some(schema) = catalog.schema(&schema_name) {
                out.push((catalog_name.clone(), schema_name, schema));
            }
        }
        if with_info {
            let info = InformationSchemaProvider::new(Arc::clone(state.catalog_list()));
            out.push((
                catalog_name.clone(),
                INFORMATION_SCHEMA.to_owned(),
                Arc::new(info),
            ));
        }
    }
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

/// GetTables: every table and view, filtered as the command asks, with each
/// table's Arrow schema (fields annotated with `ARROW:FLIGHT:SQL:*` metadata)
/// when `include_schema` is set.
pub async fn tables(ctx: &SessionContext, cmd: CommandGetTables) -> Result<RecordBatch> {
    let include_schema = cmd.include_schema;
    let mut b: GetTablesBuilder = cmd.into_builder();
    for (catalog_name, schema_name, schema) in schemas(ctx) {
        let mut names = schema.table_names();
        names.sort();
        for table_name in names {
            let Some(table) = schema.table(&table_name).await? else {
                continue;
            };
            let arrow_schema = if include_schema {
                annotate(&table.schema(), &catalog_name, &schema_name, &table_name)
            } else {
                Arc::new(Schema::empty())
            };
            b.append(
                &catalog_name,
                &schema_name,
                &table_name,
                table_type_name(table.table_type()),
                &arrow_schema,
            )
            .map_err(flight_err)?;
        }
    }
    b.build().map_err(flight_err)
}

/// Adds the Flight SQL column metadata JDBC reads (type name, precision, scale,
/// owning table) to every field of `schema`.
pub fn annotate(schema: &SchemaRef, catalog: &str, db_schema: &str, table: &str) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let mut md = f.metadata().clone();
            let mut put = |k: &str, v: String| {
                md.insert(format!("ARROW:FLIGHT:SQL:{k}"), v);
            };
            put("CATALOG_NAME", catalog.to_owned());
            put("DB_SCHEMA_NAME", db_schema.to_owned());
            put("TABLE_NAME", table.to_owned());
            put("TYPE_NAME", sql_type_name(f.data_type()));
            if let Some((precision, scale)) = precision_scale(f.data_type()) {
                put("PRECISION", precision.to_string());
                put("SCALE", scale.to_string());
            }
            put("IS_AUTO_INCREMENT", "0".into());
            put(
                "IS_CASE_SENSITIVE",
                u8::from(is_text(f.data_type())).to_string(),
            );
            put("IS_READ_ONLY", "1".into());
            put("IS_SEARCHABLE", "1".into());
            f.as_ref().clone().with_metadata(md)
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn precision_scale(t: &DataType) -> Option<(u8, i8)> {
    match t {
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => Some((*p, *s)),
        _ => None,
    }
}

/// The SQL name of an Arrow type, as DataFusion's SQL spells it.
pub fn sql_type_name(t: &DataType) -> String {
    use DataType as D;
    match t {
        D::Null => "NULL".into(),
        D::Boolean => "BOOLEAN".into(),
        D::Int8 => "TINYINT".into(),
        D::Int16 => "SMALLINT".into(),
        D::Int32 => "INTEGER".into(),
        D::Int64 => "BIGINT".into(),
        D::UInt8 => "TINYINT UNSIGNED".into(),
        D::UInt16 => "SMALLINT UNSIGNED".into(),
        D::UInt32 => "INTEGER UNSIGNED".into(),
        D::UInt64 => "BIGINT UNSIGNED".into(),
        D::Float16 | D::Float32 => "REAL".into(),
        D::Float64 => "DOUBLE".into(),
        D::Utf8 | D::LargeUtf8 | D::Utf8View => "VARCHAR".into(),
        D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_) => "BYTEA".into(),
        D::Date32 | D::Date64 => "DATE".into(),
        D::Time32(_) | D::Time64(_) => "TIME".into(),
        D::Timestamp(_, None) => "TIMESTAMP".into(),
        D::Timestamp(_, Some(_)) => "TIMESTAMP WITH TIME ZONE".into(),
        D::Interval(_) => "INTERVAL".into(),
        D::Decimal32(p, s) | D::Decimal64(p, s) | D::Decimal128(p, s) | D::Decimal256(p, s) => {
            format!("DECIMAL({p},{s})")
        }
        D::List(f) | D::LargeList(f) | D::ListView(f) | D::FixedSizeList(f, _) => {
            format!("{}[]", sql_type_name(f.data_type()))
        }
        D::Dictionary(_, v) => sql_type_name(v),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotate_adds_type_names() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Decimal128(12, 2), true),
        ]));
        let out = annotate(&schema, "recon", "public", "t");
        let md = out.field(1).metadata();
        assert_eq!(md["ARROW:FLIGHT:SQL:TYPE_NAME"], "DECIMAL(12,2)");
        assert_eq!(md["ARROW:FLIGHT:SQL:PRECISION"], "12");
        assert_eq!(out.field(0).metadata()["ARROW:FLIGHT:SQL:TABLE_NAME"], "t");
    }
}
