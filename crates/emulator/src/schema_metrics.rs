//! The App metrics API's part of the schema (`ForgeMetricsQuery` in `graphql-types.d.ts`):
//! `invocationsValue`, `errorsValue` and `successRateValue`, grouped by `VERSION` and
//! `CONTEXT_ARI`, answered from the traffic model of [`crate::metrics`] under its limits.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject, Union};

use crate::metrics::{self, Measured};
use crate::model::{Millis, PlatformError, error_type as et};
use crate::schema::{Caller, SharedModel, gql_error, now_ms};

/// Whether the request carried the `X-ExperimentalApi` header.
#[derive(Clone, Copy, Debug)]
pub struct ExperimentalApi(pub bool);

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "ForgeMetricsGroupByDimensions")]
pub enum GroupBy {
    ContextAri,
    EnvironmentId,
    ErrorType,
    Function,
    UserTier,
    Version,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "ForgeMetricsDataType")]
pub enum DataType {
    Category,
    DateTime,
    Numeric,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "ForgeMetricsSortOrder")]
pub enum SortOrder {
    Asc,
    Desc,
}

#[derive(InputObject, Debug)]
#[graphql(name = "ForgeMetricsIntervalInput")]
pub struct IntervalInput {
    pub start: String,
    pub end: String,
}

#[derive(InputObject, Debug)]
#[graphql(name = "ForgeMetricsQueryFilters")]
pub struct Filters {
    pub context_aris: Option<Vec<ID>>,
    pub environment: Option<ID>,
    pub interval: IntervalInput,
}

#[derive(InputObject, Debug)]
#[graphql(name = "ForgeMetricsQueryInput")]
pub struct QueryInput {
    pub filters: Filters,
    pub group_by: Option<Vec<GroupBy>>,
    pub limit: Option<i32>,
    pub sort_order: Option<SortOrder>,
}

#[derive(SimpleObject, Clone, Debug)]
#[graphql(name = "ForgeMetricsLabelGroup")]
pub struct LabelGroup {
    pub key: String,
    pub value: String,
}

#[derive(SimpleObject, Clone, Debug)]
#[graphql(name = "ForgeMetricsInvocationDataPoint")]
pub struct InvocationPoint {
    pub count: i32,
    pub timestamp: String,
}

#[derive(SimpleObject, Clone, Debug)]
#[graphql(name = "ForgeMetricsErrorsDataPoint")]
pub struct ErrorsPoint {
    pub count: i32,
    pub timestamp: String,
}

#[derive(SimpleObject, Clone, Debug)]
#[graphql(name = "ForgeMetricsSuccessRateDataPoint")]
pub struct SuccessRatePoint {
    pub value: f64,
    pub timestamp: String,
}

#[derive(SimpleObject, Clone, Debug)]
#[graphql(name = "ForgeMetricsInvocationSeries")]
pub struct InvocationSeries {
    pub groups: Vec<LabelGroup>,
    pub data: Vec<InvocationPoint>,
}

#[derive(SimpleObject, Clone, Debug)]
#[graphql(name = "ForgeMetricsErrorsSeries")]
pub struct ErrorsSeries {
    pub groups: Vec<LabelGroup>,
    pub data: Vec<ErrorsPoint>,
}

#[derive(SimpleObject, Clone, Debug)]
#[graphql(name = "ForgeMetricsSuccessRateSeries")]
pub struct SuccessRateSeries {
    pub groups: Vec<LabelGroup>,
    pub data: Vec<SuccessRatePoint>,
}

#[derive(SimpleObject, Clone, Debug)]
#[graphql(name = "ForgeMetricsInvocationsValueData")]
pub struct InvocationsValueData {
    pub name: String,
    #[graphql(name = "type")]
    pub data_type: DataType,
    pub series: Vec<InvocationSeries>,
}

#[derive(SimpleObject, Clone, Debug)]
#[graphql(name = "ForgeMetricsErrorsValueData")]
pub struct ErrorsValueData {
    pub name: String,
    #[graphql(name = "type")]
    pub data_type: DataType,
    pub series: Vec<ErrorsSeries>,
}

#[derive(SimpleObject, Clone, Debug)]
#[graphql(name = "ForgeMetricsSuccessRateValueData")]
pub struct SuccessRateValueData {
    pub name: String,
    #[graphql(name = "type")]
    pub data_type: DataType,
    pub series: Vec<SuccessRateSeries>,
}

#[derive(SimpleObject, Clone, Debug)]
#[graphql(name = "QueryErrorExtension")]
pub struct QueryErrorExtension {
    pub error_type: Option<String>,
    pub status_code: Option<i32>,
}

#[derive(SimpleObject, Clone, Debug)]
#[graphql(name = "QueryError")]
pub struct QueryError {
    pub identifier: Option<ID>,
    pub message: Option<String>,
    pub extensions: Option<Vec<QueryErrorExtension>>,
}

impl QueryError {
    fn of(error_type: &str, status: i32, message: String) -> Self {
        QueryError {
            identifier: None,
            message: Some(message),
            extensions: Some(vec![QueryErrorExtension {
                error_type: Some(error_type.to_string()),
                status_code: Some(status),
            }]),
        }
    }
}

#[derive(Union, Clone, Debug)]
#[graphql(name = "ForgeMetricsInvocationsValueResult")]
pub enum InvocationsValueResult {
    Data(InvocationsValueData),
    Error(QueryError),
}

#[derive(Union, Clone, Debug)]
#[graphql(name = "ForgeMetricsErrorsValueResult")]
pub enum ErrorsValueResult {
    Data(ErrorsValueData),
    Error(QueryError),
}

#[derive(Union, Clone, Debug)]
#[graphql(name = "ForgeMetricsSuccessRateValueResult")]
pub enum SuccessRateValueResult {
    Data(SuccessRateValueData),
    Error(QueryError),
}

/// `ecosystem.forgeMetrics(appId)`: checked for the header and the app's owner when asked.
pub struct ForgeMetricsQuery {
    pub app_id: String,
}

/// Checks the header and that the caller owns the app (the docs: "the Atlassian account making
/// the request must be the same account that owns the Forge app").
pub fn forge_metrics(ctx: &Context<'_>, app_id: &str) -> async_graphql::Result<ForgeMetricsQuery> {
    if !ctx.data_opt::<ExperimentalApi>().is_some_and(|e| e.0) {
        return Err(gql_error(PlatformError::new(
            et::BAD_REQUEST,
            400,
            "the App metrics API is experimental: send the X-ExperimentalApi header",
        )));
    }
    let caller = ctx.data_opt::<Caller>().map(|c| c.0.clone()).unwrap_or_default();
    let model = ctx.data::<SharedModel>()?.lock().unwrap_or_else(|e| e.into_inner());
    model.owned_app(&caller, app_id).map_err(gql_error)?;
    Ok(ForgeMetricsQuery { app_id: app_id.to_string() })
}

fn parse_time(s: &str) -> Option<Millis> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond())
}

/// One call: counted against the caller's limit, its input checked, then measured; or the
/// `QueryError` the API answers instead.
fn call(
    ctx: &Context<'_>,
    app_id: &str,
    query: &QueryInput,
) -> Result<(Vec<Measured>, Vec<GroupBy>, String), QueryError> {
    let now = now_ms();
    let caller = ctx.data_opt::<Caller>().map(|c| c.0.clone()).unwrap_or_default();
    let shared = ctx.data::<SharedModel>().map_err(|e| QueryError::of(et::SITE_FAILURE, 500, e.message))?;
    let mut model = shared.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(wait_ms) = model.metrics_calls.admit(&caller, now) {
        return Err(QueryError::of(
            "TOO_MANY_REQUESTS",
            429,
            format!(
                "rate limit exceeded: {} calls a minute per user; retry in {} s",
                metrics::CALLS_PER_MINUTE,
                (wait_ms + 999) / 1000
            ),
        ));
    }
    let interval = &query.filters.interval;
    let (Some(start), Some(end)) = (parse_time(&interval.start), parse_time(&interval.end)) else {
        return Err(QueryError::of(
            et::BAD_REQUEST,
            400,
            "interval.start and interval.end must be RFC 3339 times".into(),
        ));
    };
    if let Some(why) = metrics::interval_refused(start, end, now) {
        return Err(QueryError::of(et::BAD_REQUEST, 400, why));
    }
    let group_by = query.group_by.clone().unwrap_or_default();
    if let Some(g) = group_by.iter().find(|g| !matches!(g, GroupBy::Version | GroupBy::ContextAri)) {
        return Err(QueryError::of(
            et::BAD_REQUEST,
            400,
            format!("the emulator groups by VERSION and CONTEXT_ARI, not {g:?}"),
        ));
    }
    let model = &*model;
    let mut measured = metrics::measure(
        model,
        &model.traffic,
        app_id,
        query.filters.environment.as_ref().map(|e| e.as_str()),
        start,
        end,
        now,
    );
    if let Some(contexts) = &query.filters.context_aris {
        measured.retain(|m| contexts.iter().any(|c| c.as_str() == m.context));
    }
    Ok((measured, group_by, jiff::Timestamp::from_millisecond(end).map(|t| t.to_string()).unwrap_or_default()))
}

/// Sums the measures into one series per group (`groupBy`'s dimensions, in its order).
fn grouped(measured: &[Measured], group_by: &[GroupBy], limit: Option<i32>) -> Vec<(Vec<LabelGroup>, u64, u64)> {
    let mut out: Vec<(Vec<LabelGroup>, u64, u64)> = Vec::new();
    for m in measured {
        let groups: Vec<LabelGroup> = group_by
            .iter()
            .map(|g| match g {
                GroupBy::Version => LabelGroup { key: "VERSION".into(), value: m.version.clone() },
                _ => LabelGroup { key: "CONTEXT_ARI".into(), value: m.context.clone() },
            })
            .collect();
        match out.iter_mut().find(|(g, _, _)| g.iter().zip(&groups).all(|(a, b)| a.value == b.value)) {
            Some((_, inv, err)) => {
                *inv += m.invocations;
                *err += m.errors;
            }
            None => out.push((groups, m.invocations, m.errors)),
        }
    }
    if let Some(limit) = limit.and_then(|l| usize::try_from(l).ok()) {
        out.sort_by_key(|o| std::cmp::Reverse(o.1));
        out.truncate(limit);
    }
    out
}

fn count(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[Object]
impl ForgeMetricsQuery {
    async fn app_id(&self) -> ID {
        ID(self.app_id.clone())
    }

    /// Invocations over the interval, one value per series.
    async fn invocations_value(&self, ctx: &Context<'_>, query: QueryInput) -> InvocationsValueResult {
        match call(ctx, &self.app_id, &query) {
            Err(e) => InvocationsValueResult::Error(e),
            Ok((measured, group_by, at)) => InvocationsValueResult::Data(InvocationsValueData {
                name: "FORGE_BACKEND_INVOCATION_COUNT".into(),
                data_type: DataType::Numeric,
                series: grouped(&measured, &group_by, query.limit)
                    .into_iter()
                    .map(|(groups, inv, _)| InvocationSeries {
                        groups,
                        data: vec![InvocationPoint { count: count(inv), timestamp: at.clone() }],
                    })
                    .collect(),
            }),
        }
    }

    /// Failed invocations over the interval, one value per series.
    async fn errors_value(&self, ctx: &Context<'_>, query: QueryInput) -> ErrorsValueResult {
        match call(ctx, &self.app_id, &query) {
            Err(e) => ErrorsValueResult::Error(e),
            Ok((measured, group_by, at)) => ErrorsValueResult::Data(ErrorsValueData {
                name: "FORGE_BACKEND_INVOCATION_ERRORS".into(),
                data_type: DataType::Numeric,
                series: grouped(&measured, &group_by, query.limit)
                    .into_iter()
                    .map(|(groups, _, err)| ErrorsSeries {
                        groups,
                        data: vec![ErrorsPoint { count: count(err), timestamp: at.clone() }],
                    })
                    .collect(),
            }),
        }
    }

    /// The share of invocations that succeeded over the interval (0 to 1), one value per series
    /// with invocations.
    async fn success_rate_value(&self, ctx: &Context<'_>, query: QueryInput) -> SuccessRateValueResult {
        match call(ctx, &self.app_id, &query) {
            Err(e) => SuccessRateValueResult::Error(e),
            Ok((measured, group_by, at)) => SuccessRateValueResult::Data(SuccessRateValueData {
                name: "FORGE_BACKEND_INVOCATION_SUCCESS_RATE".into(),
                data_type: DataType::Numeric,
                series: grouped(&measured, &group_by, query.limit)
                    .into_iter()
                    .filter(|(_, inv, _)| *inv > 0)
                    .map(|(groups, inv, err)| {
                        #[allow(clippy::cast_precision_loss)]
                        let value = (inv - err.min(inv)) as f64 / inv as f64;
                        SuccessRateSeries { groups, data: vec![SuccessRatePoint { value, timestamp: at.clone() }] }
                    })
                    .collect(),
            }),
        }
    }
}
