//! What the server says about itself: the GetSqlInfo table (DESIGN §6 — every
//! list filled, JDBC reads keywords and function lists from it) and the
//! GetXdbcTypeInfo table of the SQL types DataFusion supports.

use std::sync::Arc;

use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlOuterJoinsSupportLevel,
    SqlSupportedCaseSensitivity, SqlSupportedTransaction, SupportedSqlGrammar, XdbcDataType,
    XdbcDatetimeSubcode,
};
use datafusion::logical_expr::ScalarUDF;
use datafusion::sql::sqlparser::keywords::ALL_KEYWORDS;

fn names(functions: Vec<Arc<ScalarUDF>>) -> Vec<String> {
    let mut names: Vec<String> = functions
        .iter()
        .flat_map(|f| std::iter::once(f.name().to_owned()).chain(f.aliases().iter().cloned()))
        .map(|n| n.to_ascii_uppercase())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Builds the GetSqlInfo table; `statement_timeout_secs` 0 = none.
pub fn sql_info(statement_timeout_secs: u64) -> Result<SqlInfoData, FlightError> {
    use datafusion::functions as f;
    let mut numeric = names(f::math::functions());
    numeric.extend(["CALC_DISCREPANCY".into(), "KPI_CALCULATION".into()]);
    let mut string = names(f::string::functions());
    string.extend(names(f::unicode::functions()));
    string.extend([
        "FLAG_COMPLIANCE".into(),
        "MASK_SENSITIVE".into(),
        "DERIVE_STATUS".into(),
    ]);
    string.sort();
    let system = names(f::core::functions());
    let datetime = names(f::datetime::functions());
    let keywords: Vec<String> = ALL_KEYWORDS.iter().map(|k| (*k).to_owned()).collect();

    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "recon");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, true);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, true);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(
        SqlInfo::FlightSqlServerStatementTimeout,
        i32::try_from(statement_timeout_secs).unwrap_or(i32::MAX),
    );
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    b.append(SqlInfo::SqlKeywords, keywords);
    b.append(SqlInfo::SqlNumericFunctions, numeric);
    b.append(SqlInfo::SqlStringFunctions, string);
    b.append(SqlInfo::SqlSystemFunctions, system);
    b.append(SqlInfo::SqlDatetimeFunctions, datetime);
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlExtraNameCharacters, "");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    // Bitmask of SqlSupportedGroupBy: unrelated (bit 0) and beyond select (bit 1).
    b.append(SqlInfo::SqlSupportedGroupBy, 0b11i32);
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    b.append(
        SqlInfo::SqlSupportedGrammar,
        1i32 << SupportedSqlGrammar::SqlCoreGrammar as i32,
    );
    b.append(
        SqlInfo::SqlAnsi92SupportedLevel,
        1i32, // bit 0: ANSI92_ENTRY_SQL (the enum is not re-exported by arrow-flight)
    );
    b.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
    b.append(
        SqlInfo::SqlOuterJoinsSupportLevel,
        SqlOuterJoinsSupportLevel::SqlFullOuterJoins as i32,
    );
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlProcedureTerm, "procedure");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlSchemasSupportedActions, 0i32);
    b.append(SqlInfo::SqlCatalogsSupportedActions, 0i32);
    b.append(SqlInfo::SqlSupportedPositionedCommands, 0i32);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    // Bitmask of SqlSupportedSubqueries: comparisons, EXISTS, IN, quantified.
    b.append(SqlInfo::SqlSupportedSubqueries, 0b1111i32);
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    // Bitmask of SqlSupportedUnions: UNION and UNION ALL.
    b.append(SqlInfo::SqlSupportedUnions, 0b11i32);
    for limit in [
        SqlInfo::SqlMaxBinaryLiteralLength,
        SqlInfo::SqlMaxCharLiteralLength,
        SqlInfo::SqlMaxColumnNameLength,
        SqlInfo::SqlMaxColumnsInGroupBy,
        SqlInfo::SqlMaxColumnsInIndex,
        SqlInfo::SqlMaxColumnsInOrderBy,
        SqlInfo::SqlMaxColumnsInSelect,
        SqlInfo::SqlMaxColumnsInTable,
        SqlInfo::SqlMaxConnections,
        SqlInfo::SqlMaxCursorNameLength,
        SqlInfo::SqlMaxIndexLength,
        SqlInfo::SqlDbSchemaNameLength,
        SqlInfo::SqlMaxProcedureNameLength,
        SqlInfo::SqlMaxCatalogNameLength,
        SqlInfo::SqlMaxRowSize,
        SqlInfo::SqlMaxStatementLength,
        SqlInfo::SqlMaxStatements,
        SqlInfo::SqlMaxTableNameLength,
        SqlInfo::SqlMaxTablesInSelect,
        SqlInfo::SqlMaxUsernameLength,
    ] {
        b.append(limit, 0i64); // 0: no limit known
    }
    b.append(SqlInfo::SqlMaxRowSizeIncludesBlobs, true);
    b.append(SqlInfo::SqlDefaultTransactionIsolation, 0i64);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::SqlSupportedTransactionsIsolationLevels, 0i32);
    b.append(SqlInfo::SqlDataDefinitionCausesTransactionCommit, false);
    b.append(SqlInfo::SqlDataDefinitionsInTransactionsIgnored, true);
    // Bitmask of SqlSupportedResultSetType: forward only (bit 1).
    b.append(SqlInfo::SqlSupportedResultSetTypes, 0b10i32);
    b.append(SqlInfo::SqlBatchUpdatesSupported, false);
    b.append(SqlInfo::SqlSavepointsSupported, false);
    b.append(SqlInfo::SqlNamedParametersSupported, false);
    b.append(SqlInfo::SqlLocatorsUpdateCopy, false);
    b.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
    b.build()
}

struct TypeRow {
    name: &'static str,
    data_type: XdbcDataType,
    column_size: Option<i32>,
    quote: bool,
    radix: Option<i32>,
    subcode: Option<XdbcDatetimeSubcode>,
}

const fn row(name: &'static str, data_type: XdbcDataType, column_size: i32) -> TypeRow {
    TypeRow {
        name,
        data_type,
        column_size: Some(column_size),
        quote: false,
        radix: Some(10),
        subcode: None,
    }
}

/// Builds the GetXdbcTypeInfo table: the SQL types DataFusion accepts in casts
/// and DDL, with their JDBC/ODBC type codes.
pub fn xdbc_type_info() -> Result<XdbcTypeInfoData, FlightError> {
    use XdbcDataType as T;
    let text = |name| TypeRow {
        name,
        data_type: T::XdbcVarchar,
        column_size: Some(i32::MAX),
        quote: true,
        radix: None,
        subcode: None,
    };
    let time = |name, data_type, subcode| TypeRow {
        name,
        data_type,
        column_size: Some(32),
        quote: true,
        radix: None,
        subcode: Some(subcode),
    };
    let rows = [
        row("BOOLEAN", T::XdbcBit, 1),
        row("TINYINT", T::XdbcTinyint, 3),
        row("SMALLINT", T::XdbcSmallint, 5),
        row("INTEGER", T::XdbcInteger, 10),
        row("BIGINT", T::XdbcBigint, 19),
        row("REAL", T::XdbcFloat, 7),
        row("DOUBLE", T::XdbcDouble, 15),
        row("DECIMAL", T::XdbcDecimal, 38),
        text("VARCHAR"),
        TypeRow {
            data_type: T::XdbcVarbinary,
            radix: None,
            ..text("BYTEA")
        },
        // XDBC_SUBCODE_DATE is an alias of 1 (YEAR), which prost keeps under that name.
        time("DATE", T::XdbcDate, XdbcDatetimeSubcode::XdbcSubcodeYear),
        time("TIME", T::XdbcTime, XdbcDatetimeSubcode::XdbcSubcodeTime),
        time(
            "TIMESTAMP",
            T::XdbcTimestamp,
            XdbcDatetimeSubcode::XdbcSubcodeTimestamp,
        ),
    ];
    let mut b = XdbcTypeInfoDataBuilder::new();
    for r in rows {
        let quote = r.quote.then(|| "'".to_owned());
        b.append(XdbcTypeInfo {
            type_name: r.name.into(),
            data_type: r.data_type,
            column_size: r.column_size,
            literal_prefix: quote.clone(),
            literal_suffix: quote,
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive: r.quote,
            searchable: Searchable::Full,
            unsigned_attribute: r.radix.map(|_| false),
            fixed_prec_scale: false,
            auto_increment: r.radix.map(|_| false),
            local_type_name: Some(r.name.into()),
            minimum_scale: None,
            maximum_scale: None,
            sql_data_type: r.data_type,
            datetime_subcode: r.subcode,
            num_prec_radix: r.radix,
            interval_precision: None,
        });
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_build_with_filled_lists() {
        let info = sql_info(30).unwrap();
        let batch = info.record_batch([SqlInfo::SqlKeywords as u32]).unwrap();
        assert_eq!(batch.num_rows(), 1);
        let all = info.record_batch([]).unwrap();
        assert!(all.num_rows() > 80, "{}", all.num_rows());
        let types = xdbc_type_info().unwrap().record_batch(None).unwrap();
        assert_eq!(types.num_rows(), 13);
    }
}
